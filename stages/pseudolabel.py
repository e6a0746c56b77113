"""pseudolabel stage: 19-class train-id labels for every frame (both cameras) -> data/pseudolabels.

Real KITTI: the Cityscapes DeepLabv3+ checkpoint of ``pseudolabel.checkpoint``. Embedded default
(checkpoint null, ``labeller: teacher``): train a teacher on the generator's labelled frames of the train
drives (data/teacher/teacher.pt; every RNG seeded from ``teacher_seed`` before the network is built, so
the same params give the same labels bit for bit), label everything, and report its mIoU on the held-out
(val/test) drives. ``labeller: oracle`` (generated data only) copies the generator's exact semantic
ground truth instead: class boundaries, hence B_t and the metric loss, are there by construction.
Writes data/manifests/pseudolabels.json and metrics/pseudolabel.json. Labels kept from an earlier run are
checked against that manifest (content hashes) first: missing or changed ones are labelled again.

What each label depends on, so that only what changed is relabelled: ``psdif.semantics.pseudolabel``.

Throughput (``psdif.semantics.labels.label_frames``): on a GPU, worker processes decode the frames ahead and
threads encode the PNGs while the model runs batched (``pseudolabel.precision``: bf16 autocast on the paper
preset, channels-last). Every GPU of a machine, and several machines: PSDIF_NPROC / PSDIF_NNODES as for the
train stage (``psdif.distributed``); each rank labels the slice ``frames[rank::world]`` (a killed run
resumes: finished files are kept), and rank 0 writes the manifest once every rank is done.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from psdif.data import kitti
from psdif.semantics import cityscapes, deeplab, labels, teacher
from psdif.semantics.pseudolabel import (OUT, GroundTruthLoader, ImageLoader, all_frames, checkpoint_digest,
                                         drive_roles, frame_sources, get_teacher, held_out_miou, labelling_config,
                                         outdated_labels, teacher_data)
from psdif.stage import stage_args
from psdif.variants import NO_LABELLER, NO_LABELLER_WHY, VARIANTS, needs_labels
from psdif.paths import INPUT_FINGERPRINTS, RAW_TRAIN, TRAIN_LIST, VAL_LIST
from psdif.io import PathEscapeError, ReadOnlyTreeError, progress_enabled
from psdif.io import check_tree, prepare_output_tree, previous_record, read_json, tree_manifest, write_json
from psdif.reports import write_report
from psdif.distributed import init_distributed, loader_workers, relaunch_under_torchrun

MANIFEST = Path("data/manifests/pseudolabels.json")
METRICS = Path("metrics/pseudolabel.json")


def main(argv=None) -> None:

    import torch
    import torch.distributed as dist

    argv = sys.argv[1:] if argv is None else argv
    relaunch_under_torchrun(__file__, argv)  # PSDIF_NPROC / PSDIF_NNODES: one process per GPU
    p, _ = stage_args("pseudolabel", argv)
    root, progress = Path(p.data.raw_root), progress_enabled()
    cuda = torch.cuda.is_available()
    dinfo = init_distributed(cuda, timeout_minutes=240)  # ranks wait for the slowest slice at the end
    device = torch.device("cuda", dinfo.local_rank) if cuda else torch.device("cpu")
    try:  # a list line leaving data.raw_root ('..', absolute, a link out) stops here, naming the line
        roles = drive_roles(p, TRAIN_LIST, VAL_LIST)
        frames = all_frames(root, roles)
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc}") from None
    q = p.pseudolabel
    unlabelled = p.data.source == "video" and not q.checkpoint  # the teacher learns from generated labels
    if unlabelled:
        print(f"warning: {NO_LABELLER_WHY}; every frame gets the void label, the rows that need labels write "
              f"'not run' and the others ({', '.join(v for v in VARIANTS if not needs_labels(VARIANTS[v]))}) "
              "train as usual", file=sys.stderr)
    model = None
    if q.checkpoint:  # loaded before anything is deleted: an unreadable file never costs the existing labels
        try:
            model = teacher.load_labeller(q.checkpoint)
        except deeplab.CheckpointError as exc:
            raise SystemExit(f"error: pseudolabel.checkpoint: {exc}; the labels on disk are kept") from None
    raw = read_json(RAW_TRAIN).get("files", {}) if Path(RAW_TRAIN).exists() else {}
    oracle = q.labeller == "oracle" and not q.checkpoint
    config = labelling_config(p, teacher_data(p, root, frames, roles, raw),
                              checkpoint_digest(p, INPUT_FINGERPRINTS["pseudolabel.checkpoint"]))
    sources = frame_sources(p, root, frames, raw, oracle)
    if dinfo.main:  # every kept label is checked against the previous manifest: a changed one is relabelled,
        # and so is one made from a frame that changed since (the others are kept)
        prepare_output_tree(OUT, config, "relabelling everything")
        expected = list(sources)
        outdated = outdated_labels(previous_record(MANIFEST, config, "sources"), sources)
        check = check_tree(OUT, expected, previous_record(MANIFEST, config), "**/*.png", outdated=outdated)
        print(check.report("pseudolabel", "label", "relabelling"))

    labeller = "cityscapes_checkpoint" if q.checkpoint else NO_LABELLER if unlabelled else q.labeller
    read_frame = ImageLoader(str(root), p.data.img_ext)
    if labeller == "oracle":  # the "image" is the ground truth itself, passed through unchanged
        label_fn, read_frame = (lambda gt: gt), GroundTruthLoader(root)
    elif unlabelled:  # void everywhere: ignored by every loss, no boundary; the train stages say "not run"
        label_fn = lambda imgs: np.full(imgs.shape[:3], cityscapes.VOID_LABEL, np.uint8)  # noqa: E731
    elif q.checkpoint:
        pass  # loaded above
    elif dinfo.main:  # the teacher is trained once, by rank 0; the others load it after the barrier
        model = get_teacher(p, root, frames, roles, progress, config)
    if dinfo.world > 1:
        dist.barrier()  # the output tree (and the teacher) are ready
    if labeller not in ("oracle", NO_LABELLER):
        if model is None:
            model = get_teacher(p, root, frames, roles, progress, config)
        label_fn = lambda imgs: labels.predict_labels(model, imgs, q.batch_size, device, q.precision)  # noqa: E731
    try:
        hist = labels.label_frames(label_fn, frames, read_frame, OUT, q.batch_size, rank=dinfo.rank,
                                   world_size=dinfo.world, progress=progress, workers=loader_workers("auto", cuda))
    except (PathEscapeError, ReadOnlyTreeError) as exc:  # an output outside data/pseudolabels: never written
        raise SystemExit(f"error: {exc}") from None
    if dinfo.world > 1:  # every rank is done: the histogram of all slices
        total_hist = torch.from_numpy(hist).to(device)
        dist.all_reduce(total_hist)
        hist = total_hist.cpu().numpy()
        if dinfo.initialised_here:
            dist.destroy_process_group()
    if not dinfo.main:
        return
    total = max(int(hist.sum()), 1)
    report = {"frames": len(frames), "labeller": labeller, **({"why": NO_LABELLER_WHY} if unlabelled else {}),
              "class_fraction": {n: round(int(c) / total, 6) for n, c in zip(cityscapes.CITYSCAPES_CLASSES, hist)}}
    if p.data.source == "synthetic" and not q.checkpoint:
        report[f"{labeller}_heldout"] = held_out_miou(root, frames, roles)
        print(f"{labeller} mIoU on held-out drives: {report[f'{labeller}_heldout']['miou']:.3f}")
    write_report(METRICS, report)
    write_json(MANIFEST, {"config": config, "files": tree_manifest(OUT, "**/*.png"), "sources": sources,
                          **({"labeller": NO_LABELLER, "why": NO_LABELLER_WHY} if unlabelled else {})})
    print(f"wrote {MANIFEST} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
