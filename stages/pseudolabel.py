"""pseudolabel stage: 19-class train-id labels for every frame (both cameras) -> data/pseudolabels.

Real KITTI: the Cityscapes DeepLabv3+ checkpoint of ``pseudolabel.checkpoint``. Embedded default
(checkpoint null, ``labeller: teacher``): train a teacher on the generator's labelled frames of the train
drives (data/teacher/teacher.pt; every RNG seeded from ``teacher_seed`` before the network is built, so
the same params give the same labels bit for bit), label everything, and report its mIoU on the held-out
(val/test) drives. ``labeller: oracle`` (generated data only) copies the generator's exact semantic
ground truth instead: class boundaries, hence B_t and the metric loss, are there by construction.
Writes data/manifests/pseudolabels.json and metrics/pseudolabel.json. Labels kept from an earlier run are
checked against that manifest (content hashes) first: missing or changed ones are labelled again.

Per frame: the manifest records, for every label, the content hash of the frame it was made from (its image
in data/manifests/raw_train.json; the generator's semantic ground truth for ``labeller: oracle``), so a
changed or new frame relabels that frame only (counted). What relabels everything is the labelling
configuration (``labelling_config``: checkpoint content, labeller, sizes, teacher settings) and, for the
in-pipeline teacher, the frames it learns from: the teacher's key covers the content of the train drives'
images and ground truth, so a changed training image retrains the teacher (and relabels everything), while a
changed val / test image relabels that one frame and a test-side file (scan, depth) reaches no label.

Throughput (``psdif.semantics.labels.label_frames``): on a GPU, worker processes decode the frames ahead and
threads encode the PNGs while the model runs batched (``pseudolabel.precision``: bf16 autocast on the paper
preset, channels-last). Every GPU of a machine, and several machines: PSDIF_NPROC / PSDIF_NNODES as for the
train stage (``psdif.distributed``); each rank labels the slice ``frames[rank::world]`` (a killed run
resumes: finished files are kept), and rank 0 writes the manifest once every rank is done.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from psdif.data.images import read_image
from psdif.data import kitti
from psdif.semantics import cityscapes, deeplab, labels, teacher
from psdif.stage import stage_args
from psdif.paths import INPUT_FINGERPRINTS, RAW_TRAIN, TRAIN_LIST, VAL_LIST
from psdif.io import PathEscapeError, ReadOnlyTreeError, progress_enabled
from psdif.io import (check_tree, params_hash, prepare_output_tree, previous_record, read_json, sha256_file,
                      tree_manifest, write_json)
from psdif.reports import write_report
from psdif.distributed import init_distributed, loader_workers, relaunch_under_torchrun

OUT = Path("data/pseudolabels")
TEACHER = Path("data/teacher/teacher.pt")
MANIFEST = Path("data/manifests/pseudolabels.json")
METRICS = Path("metrics/pseudolabel.json")


def drive_roles(p) -> dict[str, str]:
    """folder -> train|val|test for every drive the pipeline uses (the filtered lists and the test list)."""
    splits = Path(p.data.splits_dir)
    if p.data.source == "synthetic":
        from psdif.data.static_filter import read_drive_roles
        return read_drive_roles(splits / "synthetic_drives.txt")
    roles = {}
    for path, role in ((Path(TRAIN_LIST), "train"), (Path(VAL_LIST), "val"),
                       (splits / p.data.test_split / "test_files.txt", "test")):
        for ref in kitti.read_split(path, p.data.raw_root):
            roles.setdefault(ref.folder, role)
    return roles


def all_frames(root: Path, folders) -> list[kitti.FrameRef]:
    """Every frame on disk of both cameras of each drive (drives and cameras not on disk have none)."""
    return [kitti.FrameRef(f, i, side) for f in sorted(folders) for side in ("l", "r")
            if (kitti.drive_dir(root, f) / f"image_0{kitti.SIDE_TO_CAM[side]}" / "data").is_dir()
            for i in kitti.list_frames(root, f, kitti.SIDE_TO_CAM[side])]


def checkpoint_digest(p) -> str | None:
    """SHA-256 of ``pseudolabel.checkpoint`` (the check stage's fingerprint, or the file itself): labels made
    with another file at the same path are not trusted."""
    ckpt = p.pseudolabel.checkpoint
    if ckpt is None:
        return None
    fp = Path(INPUT_FINGERPRINTS["pseudolabel.checkpoint"])
    if fp.is_file():
        record = read_json(fp)
        if record.get("value") == ckpt and isinstance(record.get("sha256"), str):
            return record["sha256"]
    return sha256_file(ckpt)


def gt_label_path(root: Path, ref: kitti.FrameRef) -> Path:
    """The generator's semantic ground truth of a frame (train ids, 8-bit PNG)."""
    return root / "synthetic_gt" / ref.folder.split("/")[-1] / f"semantic_0{ref.cam}" / f"{ref.frame:010d}.png"


def get_teacher(p, root: Path, frames, roles, progress: bool, config: str):
    """Load the trained teacher if it matches this configuration, else train and save it."""
    if TEACHER.exists():
        import torch
        if torch.load(TEACHER, map_location="cpu", weights_only=True).get("config") == config:
            return teacher.load_teacher(TEACHER)
    q = p.pseudolabel
    train = [(kitti.image_path(root, r, p.data.img_ext), gt_label_path(root, r))
             for r in sorted(frames) if roles[r.folder] == "train"]  # a fixed order: the sampler draws indices
    model = teacher.build_teacher(q.teacher_encoder, 19, q.teacher_decoder_channels, seed=q.teacher_seed)
    hist = teacher.train_teacher(model, train, q.teacher_steps, q.teacher_batch_size, q.teacher_lr,
                             q.teacher_height, q.teacher_width, q.teacher_seed, tuple(q.teacher_scale),
                             q.teacher_weight_decay, progress=progress,
                             class_weighting=q.teacher_class_weighting)
    print(f"teacher: {q.teacher_steps} steps in {hist['seconds']:.0f} s, final loss {hist['loss'][-1]:.3f}")
    teacher.save_teacher(model, TEACHER, {"config": config, "seconds": hist["seconds"], "loss": hist["loss"]})
    return model


def labelling_config(p, teacher_data: dict | None, cuda: bool | None = None) -> str:
    """Hash of everything every label depends on (a change relabels everything and retrains the teacher).

    Not the raw frames: each label records the frame it was made from (:func:`frame_sources`). teacher_data:
    the content hashes of what the in-pipeline teacher learns from (:func:`teacher_data`), None otherwise.

    It covers every ``pseudolabel`` value that decides the labels, ``labeller`` included, but not those that
    only change how fast they are made (``config.LABELLING_INDEPENDENT``: batch_size); ``precision`` only
    where it applies, on CUDA (``cuda``: default, whether torch sees a GPU): a CPU always labels in fp32.
    It covers the content of ``pseudolabel.checkpoint`` too: another file at the same path relabels everything.
    """
    from psdif.config import LABELLING_INDEPENDENT

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    q = {k: v for k, v in dataclasses.asdict(p.pseudolabel).items() if k not in LABELLING_INDEPENDENT}
    q["precision"] = q["precision"] if cuda else "fp32"
    return params_hash({"pseudolabel": q, "source": p.data.source,
                        "teacher_data": None if teacher_data is None else params_hash(teacher_data),
                        "checkpoint_sha256": checkpoint_digest(p)})


def _source_rel(p, ref: kitti.FrameRef, oracle: bool) -> str:
    """The raw-tree file a frame's label is made from (relative to data.raw_root)."""
    if oracle:
        return f"synthetic_gt/{ref.folder.split('/')[-1]}/semantic_0{ref.cam}/{ref.frame:010d}.png"
    return f"{ref.folder}/image_0{ref.cam}/data/{ref.frame:010d}.{p.data.img_ext}"


def _content(root: Path, rel: str, raw: dict) -> str:
    """The download's hash of ``rel`` in raw_train.json (``raw``), or the file's own MD5 when it is not listed."""
    from psdif.io import md5_file

    return raw.get(rel) or (md5_file(root / rel) if (root / rel).is_file() else "missing")


def frame_sources(p, root: Path, frames, raw: dict, oracle: bool) -> dict[str, str]:
    """label path (relative to data/pseudolabels) -> content hash of the file it is made from."""
    return {str(labels.label_path(OUT, r.folder, r.side, r.frame).relative_to(OUT)):
            _content(root, _source_rel(p, r, oracle), raw) for r in frames}


def teacher_data(p, root: Path, frames, roles, raw: dict) -> dict | None:
    """What the in-pipeline teacher learns from (train drives: image and ground-truth hashes), None when the
    labels come from a checkpoint or the oracle."""
    if p.pseudolabel.checkpoint or p.pseudolabel.labeller == "oracle":
        return None
    train = [r for r in sorted(frames) if roles[r.folder] == "train"]
    return {rel: _content(root, rel, raw) for r in train for rel in (_source_rel(p, r, False), _source_rel(p, r, True))}


def outdated_labels(previous: dict | None, sources: dict[str, str]) -> list[str]:
    """Labels recorded as made from a frame whose content differs now (their frame changed since)."""
    previous = previous or {}
    return sorted(rel for rel, src in sources.items() if rel in previous and previous[rel] != src)


def held_out_miou(root: Path, frames, roles) -> dict:
    """Stored pseudo-labels of the val/test drives against the generator's ground truth."""
    import numpy as np
    conf = np.zeros((19, 19), np.int64)
    held = [r for r in frames if roles[r.folder] != "train"]
    for r in held:
        pred = labels.read_label_png(labels.label_path(OUT, r.folder, r.side, r.frame))
        conf += labels.confusion_matrix(labels.read_label_png(gt_label_path(root, r)), pred, 19)
    return {**labels.miou_from_confusion(conf), "n_images": len(held)}


def main(argv=None) -> None:
    import sys

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
        roles = drive_roles(p)
        frames = all_frames(root, roles)
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc}") from None
    q = p.pseudolabel
    model = None
    if q.checkpoint:  # loaded before anything is deleted: an unreadable file never costs the existing labels
        try:
            model = deeplab.load_cityscapes_deeplab(q.checkpoint)
        except deeplab.CheckpointError as exc:
            raise SystemExit(f"error: pseudolabel.checkpoint: {exc}; the labels on disk are kept") from None
    raw = read_json(RAW_TRAIN).get("files", {}) if Path(RAW_TRAIN).exists() else {}
    oracle = q.labeller == "oracle" and not q.checkpoint
    config = labelling_config(p, teacher_data(p, root, frames, roles, raw))
    sources = frame_sources(p, root, frames, raw, oracle)
    if dinfo.main:  # every kept label is checked against the previous manifest: a changed one is relabelled,
        # and so is one made from a frame that changed since (the others are kept)
        prepare_output_tree(OUT, config, "relabelling everything")
        expected = list(sources)
        outdated = outdated_labels(previous_record(MANIFEST, config, "sources"), sources)
        check = check_tree(OUT, expected, previous_record(MANIFEST, config), "**/*.png", outdated=outdated)
        print(check.report("pseudolabel", "label", "relabelling"))

    labeller = "cityscapes_checkpoint" if q.checkpoint else q.labeller
    read_frame = ImageLoader(str(root), p.data.img_ext)
    if labeller == "oracle":  # the "image" is the ground truth itself, passed through unchanged
        label_fn, read_frame = (lambda gt: gt), GroundTruthLoader(root)
    elif q.checkpoint:
        pass  # loaded above
    elif dinfo.main:  # the teacher is trained once, by rank 0; the others load it after the barrier
        model = get_teacher(p, root, frames, roles, progress, config)
    if dinfo.world > 1:
        dist.barrier()  # the output tree (and the teacher) are ready
    if labeller != "oracle":
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
    report = {"frames": len(frames), "labeller": labeller,
              "class_fraction": {n: round(int(c) / total, 6) for n, c in zip(cityscapes.CITYSCAPES_CLASSES, hist)}}
    if p.data.source == "synthetic" and not q.checkpoint:
        report[f"{labeller}_heldout"] = held_out_miou(root, frames, roles)
        print(f"{labeller} mIoU on held-out drives: {report[f'{labeller}_heldout']['miou']:.3f}")
    write_report(METRICS, report)
    write_json(MANIFEST, {"config": config, "files": tree_manifest(OUT, "**/*.png"), "sources": sources})
    print(f"wrote {MANIFEST} ({len(frames)} frames)")


class ImageLoader:
    """A frame's image (picklable: decoded in worker processes)."""

    def __init__(self, root: str, img_ext: str):
        self.root, self.img_ext = root, img_ext

    def __call__(self, ref):
        return read_image(kitti.image_path(self.root, ref, self.img_ext))


class GroundTruthLoader:
    """A generated frame's semantic ground truth (the oracle labeller's "image")."""

    def __init__(self, root: Path):
        self.root = root

    def __call__(self, ref):
        return labels.read_label_png(gt_label_path(self.root, ref))


if __name__ == "__main__":
    main()
