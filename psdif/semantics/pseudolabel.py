"""Pseudo-labelling the frames (paper §4.1): which drives and frames get labels, what every label depends on,
and the teacher the embedded default labels with. The pseudolabel stage (``stages/pseudolabel.py``) runs it.

Per frame the manifest records, for every label, the content hash of the frame it was made from
(:func:`frame_sources`), so a changed or new frame relabels that frame only. What relabels everything is the
labelling configuration (:func:`labelling_config`: checkpoint content, labeller, sizes, teacher settings)
and, for the in-pipeline teacher, the frames it learns from (:func:`teacher_data`): the train drives' images and
ground truth.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from psdif.data import kitti
from psdif.data.images import read_image
from psdif.io import params_hash, read_json, sha256_file
from psdif.semantics import labels, teacher
from psdif.torchfile import load_torch

OUT = Path("data/pseudolabels")          # the label tree
TEACHER = Path("data/teacher/teacher.pt")  # the embedded default's teacher


def drive_roles(p, train_list: str | Path, val_list: str | Path) -> dict[str, str]:
    """folder -> train|val|test for every drive the pipeline uses (the filtered lists and the test list)."""
    splits = Path(p.data.splits_dir)
    if p.data.source == "synthetic":
        from psdif.data.static_filter import read_drive_roles
        return read_drive_roles(splits / "synthetic_drives.txt")
    roles = {}
    for path, role in ((Path(train_list), "train"), (Path(val_list), "val"),
                       (splits / p.data.test_split / "test_files.txt", "test")):
        for ref in kitti.read_split(path, p.data.raw_root):
            roles.setdefault(ref.folder, role)
    return roles


def all_frames(root: Path, folders) -> list[kitti.FrameRef]:
    """Every frame on disk of both cameras of each drive (drives and cameras not on disk have none)."""
    return [kitti.FrameRef(f, i, side) for f in sorted(folders) for side in ("l", "r")
            if (kitti.drive_dir(root, f) / f"image_0{kitti.SIDE_TO_CAM[side]}" / "data").is_dir()
            for i in kitti.list_frames(root, f, kitti.SIDE_TO_CAM[side])]


def checkpoint_digest(p, fingerprint: str | Path) -> str | None:
    """SHA-256 of ``pseudolabel.checkpoint`` (the check stage's ``fingerprint`` record, or the file itself):
    labels made with another file at the same path are not trusted."""
    ckpt = p.pseudolabel.checkpoint
    if ckpt is None:
        return None
    fp = Path(fingerprint)
    if fp.is_file():
        record = read_json(fp)
        if record.get("value") == ckpt and isinstance(record.get("sha256"), str):
            return record["sha256"]
    return sha256_file(ckpt)


def gt_label_path(root: Path, ref: kitti.FrameRef) -> Path:
    """The generator's semantic ground truth of a frame (train ids, 8-bit PNG)."""
    return root / "synthetic_gt" / ref.folder.split("/")[-1] / f"semantic_0{ref.cam}" / f"{ref.frame:010d}.png"


def get_teacher(p, root: Path, frames, roles, progress: bool, config: str, path: Path = TEACHER):
    """Load the trained teacher at ``path`` if it matches this configuration, else train and save it."""
    if path.exists():
        try:
            same = load_torch(path).get("config") == config
        except ValueError:  # unreadable: trained again
            same = False
        if same:
            return teacher.load_teacher(path)
    q = p.pseudolabel
    train = [(kitti.image_path(root, r, p.data.img_ext), gt_label_path(root, r))
             for r in sorted(frames) if roles[r.folder] == "train"]  # a fixed order: the sampler draws indices
    model = teacher.build_teacher(q.teacher_encoder, 19, q.teacher_decoder_channels, seed=q.teacher_seed)
    hist = teacher.train_teacher(model, train, q.teacher_steps, q.teacher_batch_size, q.teacher_lr,
                             q.teacher_height, q.teacher_width, q.teacher_seed, tuple(q.teacher_scale),
                             q.teacher_weight_decay, progress=progress,
                             class_weighting=q.teacher_class_weighting)
    print(f"teacher: {q.teacher_steps} steps in {hist['seconds']:.0f} s, final loss {hist['loss'][-1]:.3f}")
    teacher.save_teacher(model, path, {"config": config, "seconds": hist["seconds"], "loss": hist["loss"]})
    return model


def labelling_config(p, teacher_data: dict | None, checkpoint_sha256: str | None = None,
                     cuda: bool | None = None) -> str:
    """Hash of everything every label depends on (a change relabels everything and retrains the teacher).

    Not the raw frames: each label records the frame it was made from (:func:`frame_sources`). teacher_data:
    the content hashes of what the in-pipeline teacher learns from (:func:`teacher_data`), None otherwise.

    It covers every ``pseudolabel`` value that decides the labels, ``labeller`` included, but not those that
    only change how fast they are made (``config.LABELLING_INDEPENDENT``: batch_size); ``precision`` only
    where it applies, on CUDA (``cuda``: default, whether torch sees a GPU): a CPU always labels in fp32.
    It covers the content of ``pseudolabel.checkpoint`` too (``checkpoint_sha256``, :func:`checkpoint_digest`):
    another file at the same path relabels everything.
    """
    from psdif.config import LABELLING_INDEPENDENT

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    q = {k: v for k, v in dataclasses.asdict(p.pseudolabel).items() if k not in LABELLING_INDEPENDENT}
    q["precision"] = q["precision"] if cuda else "fp32"
    return params_hash({"pseudolabel": q, "source": p.data.source,
                        "teacher_data": None if teacher_data is None else params_hash(teacher_data),
                        "checkpoint_sha256": checkpoint_sha256})


def _source_rel(p, ref: kitti.FrameRef, oracle: bool) -> str:
    """The raw-tree file a frame's label is made from (relative to data.raw_root)."""
    if oracle:
        return f"synthetic_gt/{ref.folder.split('/')[-1]}/semantic_0{ref.cam}/{ref.frame:010d}.png"
    return f"{ref.folder}/image_0{ref.cam}/data/{ref.frame:010d}.{p.data.img_ext}"


def _content(root: Path, rel: str, raw: dict) -> str:
    """The download's hash of ``rel`` in raw_train.json (``raw``), or the file's own MD5 when it is not listed."""
    from psdif.io import md5_file

    return raw.get(rel) or (md5_file(root / rel) if (root / rel).is_file() else "missing")


def frame_sources(p, root: Path, frames, raw: dict, oracle: bool, out: Path = OUT) -> dict[str, str]:
    """label path (relative to the label tree ``out``) -> content hash of the file it is made from."""
    return {str(labels.label_path(out, r.folder, r.side, r.frame).relative_to(out)):
            _content(root, _source_rel(p, r, oracle), raw) for r in frames}


def teacher_data(p, root: Path, frames, roles, raw: dict) -> dict | None:
    """What the in-pipeline teacher learns from (train drives: image and ground-truth hashes), None when the
    labels come from a checkpoint or the oracle."""
    if p.pseudolabel.checkpoint or p.pseudolabel.labeller == "oracle" or p.data.source == "video":
        return None  # your videos without a checkpoint: no teacher, no labels (the void label everywhere)
    train = [r for r in sorted(frames) if roles[r.folder] == "train"]
    return {rel: _content(root, rel, raw) for r in train for rel in (_source_rel(p, r, False), _source_rel(p, r, True))}


def outdated_labels(previous: dict | None, sources: dict[str, str]) -> list[str]:
    """Labels recorded as made from a frame whose content differs now (their frame changed since)."""
    previous = previous or {}
    return sorted(rel for rel, src in sources.items() if rel in previous and previous[rel] != src)


def held_out_miou(root: Path, frames, roles, out: Path = OUT) -> dict:
    """Stored pseudo-labels (in ``out``) of the val/test drives against the generator's ground truth."""
    import numpy as np
    conf = np.zeros((19, 19), np.int64)
    held = [r for r in frames if roles[r.folder] != "train"]
    for r in held:
        pred = labels.read_label_png(labels.label_path(out, r.folder, r.side, r.frame))
        conf += labels.confusion_matrix(labels.read_label_png(gt_label_path(root, r)), pred, 19)
    return {**labels.miou_from_confusion(conf), "n_images": len(held)}


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
