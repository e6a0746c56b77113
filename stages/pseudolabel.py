"""pseudolabel stage: 19-class train-id labels for every frame (both cameras) -> data/pseudolabels.

Real KITTI: the Cityscapes DeepLabv3+ checkpoint of ``pseudolabel.checkpoint``. Embedded default
(checkpoint null, ``labeller: teacher``): train a teacher on the generator's labelled frames of the train
drives (data/teacher/teacher.pt; every RNG seeded from ``teacher_seed`` before the network is built, so
the same params give the same labels bit for bit), label everything, and report its mIoU on the held-out
(val/test) drives. ``labeller: oracle`` (generated data only) copies the generator's exact semantic
ground truth instead: class boundaries, hence B_t and the metric loss, are there by construction.
Writes data/manifests/pseudolabels.json and metrics/pseudolabel.json. Labels kept from an earlier run are
checked against that manifest (content hashes) first: missing or changed ones are labelled again.

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
from psdif.paths import INPUT_FINGERPRINTS, TRAIN_LIST, VAL_LIST
from psdif.io import PathEscapeError, ReadOnlyTreeError, progress_enabled
from psdif.io import (check_tree, params_hash, prepare_output_tree, previous_record, read_json, sha256_file,
                      tree_manifest, write_json)
from psdif.distributed import init_distributed, loader_workers, relaunch_under_torchrun

OUT = Path("data/pseudolabels")
TEACHER = Path("data/teacher/teacher.pt")
MANIFEST = Path("data/manifests/pseudolabels.json")
RAW_MANIFEST = Path("data/manifests/raw.json")
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


def labelling_config(p, raw: dict, cuda: bool | None = None) -> str:
    """Hash of everything the labels depend on (a change relabels everything and retrains the teacher).

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
                        "raw": params_hash(raw), "checkpoint_sha256": checkpoint_digest(p)})


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
    raw = read_json(RAW_MANIFEST) if RAW_MANIFEST.exists() else {}
    config = labelling_config(p, raw)
    if dinfo.main:  # every kept label is checked against the previous manifest: a changed one is relabelled
        prepare_output_tree(OUT, config, "relabelling everything")
        expected = [str(labels.label_path(OUT, r.folder, r.side, r.frame).relative_to(OUT)) for r in frames]
        check = check_tree(OUT, expected, previous_record(MANIFEST, config), "**/*.png")
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
    write_json(METRICS, report)
    write_json(MANIFEST, {"config": config, "files": tree_manifest(OUT, "**/*.png")})
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
