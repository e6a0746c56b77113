"""Pseudo-labels: inference with either labeller, mIoU, and storage as 8-bit PNGs in the KITTI layout.

Labels are Cityscapes train ids stored as ``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png``, written
atomically (:func:`label_frames` is resumable and shardable: finished files are kept and counted).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psdif.data.images import ImageError, open_image, read_image, write_png
from psdif.imagenet import imagenet_normalize
from psdif.io import join_under
from psdif.semantics.cityscapes import CITYSCAPES_CLASSES, VOID_LABEL


def normalize_images(images) -> torch.Tensor:
    """uint8 RGB [B, H, W, 3] (numpy or torch) -> ImageNet-normalised float [B, 3, H, W].

    A float tensor [B, 3, H, W] is taken as already normalised and returned unchanged.
    """
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"normalised images must be [B, 3, H, W], got {tuple(images.shape)}")
        return images
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    return imagenet_normalize(x)


# ================================================================================ inference, evaluation

def load_rgb(item) -> np.ndarray:
    """An image given as a uint8 [H, W, 3] array or as a path (read with :func:`psdif.data.images.read_image`)."""
    if isinstance(item, np.ndarray):
        return item
    return read_image(item)


def _input_multiple(model: nn.Module) -> int:
    return int(getattr(model, "input_multiple", 16))


Precision = Literal["fp32", "bf16", "fp16"]


def _autocast(precision: Precision, device: torch.device):
    """bf16 / fp16 autocast on CUDA (``pseudolabel.precision``); fp32 (no autocast) anywhere else."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def predict_logits(model: nn.Module, images, device: str | torch.device | None = None,
                   precision: Precision = "fp32") -> torch.Tensor:
    """Logits at full image size: images uint8 [B, H, W, 3] (or normalised float [B, 3, H, W]) ->
    float [B, C, H, W] on ``device``.

    uint8 images go to the device as they are (4x fewer bytes) and are normalised there. Models that need
    sizes divisible by ``model.input_multiple`` (16 for smp) get the input padded bottom/right by edge
    replication and the logits cropped back (no resampling of the labels). precision: see :func:`_autocast`;
    on CUDA the input is channels-last (the layout cuDNN's fast convolution kernels read).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    x = normalize_images(x.to(device, non_blocking=True))
    h, w = x.shape[-2:]
    m = _input_multiple(model)
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(precision, device):
        return model(x)[..., :h, :w]


def predict_labels(model: nn.Module, images, batch_size: int = 8, device: str | torch.device | None = None,
                   precision: Precision = "fp32") -> np.ndarray:
    """Argmax train ids at FULL image size: images uint8 [B, H, W, 3] -> uint8 [B, H, W].

    Batched, on the GPU when available (``device=None``, channels-last weights there); the model is put in
    eval mode. precision: ``pseudolabel.precision`` (bf16 / fp16 autocast on CUDA only).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    n = len(images)
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            logits = predict_logits(model, images[i:i + batch_size], device, precision)
            out.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.uint8)


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [C, C], rows = ground truth, cols = prediction; GT labels >= C (void 255) are ignored."""
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    keep = gt < num_classes
    return np.bincount(gt[keep] * num_classes + np.minimum(pred[keep], num_classes - 1),
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(conf: np.ndarray, names: Sequence[str] = CITYSCAPES_CLASSES) -> dict:
    """IoU per class present in the ground truth, their mean (``miou``) and the pixel accuracy."""
    tp = np.diag(conf).astype(np.float64)
    gt_count, pred_count = conf.sum(1), conf.sum(0)
    present = gt_count > 0
    iou = tp / np.maximum(gt_count + pred_count - tp, 1)
    per_class = {names[c] if c < len(names) else str(c): (float(iou[c]) if present[c] else None)
                 for c in range(len(conf))}
    return {"miou": float(iou[present].mean()) if present.any() else float("nan"),
            "pixel_acc": float(tp.sum() / max(conf.sum(), 1)),
            "per_class": per_class, "classes_present": int(present.sum())}


def evaluate_miou(model: nn.Module, samples: Sequence, batch_size: int = 8, num_classes: int = 19,
                  device: str | None = None, progress: bool = True) -> dict:
    """mIoU over the classes present in the ground truth (void 255 ignored), at full image size.

    samples: (image, label) pairs as in :func:`train_teacher`. Returns :func:`miou_from_confusion`'s
    dict (``miou``, ``pixel_acc``, ``per_class`` IoU or None, ``classes_present``) plus ``n_images``.
    """
    from psdif.process import progress_bar

    conf = np.zeros((num_classes, num_classes), np.int64)
    batch: list[tuple[np.ndarray, np.ndarray]] = []

    def flush():
        pred = predict_labels(model, np.stack([b[0] for b in batch]), batch_size, device)
        conf[...] += confusion_matrix(np.stack([b[1] for b in batch]), pred, num_classes)
        batch.clear()

    for image, label in progress_bar(samples, desc="teacher mIoU", disable=not progress):
        img = load_rgb(image)
        lab = label if isinstance(label, np.ndarray) else read_label_png(label)
        if batch and (len(batch) == batch_size or batch[0][0].shape != img.shape):
            flush()
        batch.append((img, lab))
    if batch:
        flush()
    return {**miou_from_confusion(conf), "n_images": len(samples)}


# ================================================================================================ storage

def _cam(side) -> int:
    cams = {"l": 2, "r": 3, 2: 2, 3: 3, "2": 2, "3": 3, "image_02": 2, "image_03": 3}
    if side not in cams:
        raise ValueError(f"side {side!r}: expected 'l' (image_02) or 'r' (image_03)")
    return cams[side]


def label_path(root: str | Path, folder: str, side, frame: int) -> Path:
    """``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png`` (side ``l``/``r`` or camera 2/3); a folder that
    would leave ``root`` (``..``, absolute, a symbolic link out) raises :class:`psdif.io.PathEscapeError`."""
    return join_under(root, folder, f"image_0{_cam(side)}/data/{int(frame):010d}.png", what="label PNG")


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Store train ids uint8 [H, W] as an 8-bit greyscale PNG, atomically (temp file + os.replace)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be [H, W], got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"{path}: labels outside 0..255 cannot be stored as an 8-bit PNG")
        labels = labels.astype(np.uint8)
    write_png(path, labels)  # uint8 [H, W] -> 8-bit greyscale (mode L)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit label PNG -> uint8 [H, W]; a missing, truncated or corrupt file raises naming it."""
    # DVC sees a missing or changed file of data/pseudolabels, and the stage relabels what differs from its manifest
    with open_image(path, "label PNG", "the pseudolabel stage labels the frame again: dvc repro pseudolabel") as im:
        if im.mode not in ("L", "P"):
            raise ImageError(f"{path}: label PNG has mode {im.mode}, expected 8-bit greyscale (L); the pseudolabel "
                             "stage labels the frame again: dvc repro pseudolabel")
        return np.array(im)


class _Frames(torch.utils.data.Dataset):
    """The frames to label, decoded by ``loader`` (in DataLoader worker processes)."""

    def __init__(self, refs: Sequence, loader: Callable):
        self.refs, self.loader = list(refs), loader

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        return self.refs[i], self.loader(self.refs[i])


def _as_is(item):
    return item


def _decoded(refs: Sequence, image_loader: Callable, workers: int):
    """(ref, uint8 [H, W, 3]) in order: decoded here (workers 0) or by ``workers`` processes ahead of use."""
    if workers == 0:
        return ((ref, image_loader(ref)) for ref in refs)
    return iter(torch.utils.data.DataLoader(_Frames(refs, image_loader), batch_size=None, num_workers=workers,
                                            collate_fn=_as_is, prefetch_factor=4))


def label_frames(model_fn: Callable[[np.ndarray], np.ndarray], frames: Sequence, image_loader: Callable,
                 out_root: str | Path, batch_size: int, skip_existing: bool = True, rank: int = 0,
                 world_size: int = 1, progress: bool = True, num_classes: int = 19, workers: int = 0) -> np.ndarray:
    """Label frames and store them as PNGs; resumable, shardable, batched, pipelined.

    frames: objects with ``folder``, ``frame``, ``side`` (psdif.data.kitti.FrameRef). This call handles
    ``frames[rank::world_size]`` (a deterministic slice: a rerun of a killed rank redoes what it lacks).
    image_loader(frame) -> uint8 [H, W, 3]; model_fn(uint8 [B, H, W, 3]) -> uint8 [B, H, W] train ids.
    Existing outputs are complete (atomic writes) and are skipped when ``skip_existing`` (still counted in
    the histogram). Consecutive frames of equal size share a batch. workers: 0 = decode, label, encode one
    after the other in this process; N > 0 = N processes decode frames ahead of the model (a DataLoader)
    and N threads count, encode and write the PNGs (the decoders and OpenCV's encoder release the GIL)
    while the model runs on the next batch.
    Returns the class histogram int64 [num_classes] (pixels per train id) over this shard.
    """
    from concurrent.futures import ThreadPoolExecutor
    from psdif.process import progress_bar

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    hist = np.zeros(num_classes, np.int64)

    def count(labels: np.ndarray, where) -> np.ndarray:  # per class; the void label (no class) is not counted
        known = labels[labels != VOID_LABEL]
        top = int(known.max()) if known.size else 0
        if top >= num_classes:
            raise ValueError(f"{where}: label {top} >= num_classes={num_classes}")
        return np.bincount(known.ravel(), minlength=num_classes)[:num_classes]

    def write(path: Path, labels: np.ndarray) -> np.ndarray:
        counts = count(labels, path)
        write_label_png(path, labels)
        return counts

    threads = ThreadPoolExecutor(max(workers, 1)) if workers else None
    futures: list = []

    def run(fn, *args) -> None:  # in a writer thread, or here; at most a few batches in flight
        if threads is None:
            hist[:] += fn(*args)
            return
        futures.append(threads.submit(fn, *args))
        while len(futures) > 4 * batch_size:
            hist[:] += futures.pop(0).result()

    mine = list(frames)[rank::world_size]
    todo = []
    for ref in mine:
        out = label_path(out_root, ref.folder, ref.side, ref.frame)
        if skip_existing and out.exists():
            run(lambda p: count(read_label_png(p), p), out)
        else:
            todo.append(ref)
    pending: list[tuple[object, np.ndarray]] = []

    def flush() -> None:
        labels = np.asarray(model_fn(np.stack([img for _, img in pending])))
        if labels.shape != (len(pending),) + pending[0][1].shape[:2]:
            raise ValueError(f"model_fn returned {labels.shape} for {len(pending)} images of "
                             f"{pending[0][1].shape[:2]}")
        for (ref, _), lab in zip(pending, labels):
            run(write, label_path(out_root, ref.folder, ref.side, ref.frame), lab)
        pending.clear()

    try:
        bar = progress_bar(_decoded(todo, image_loader, workers), total=len(mine), initial=len(mine) - len(todo),
                           desc=f"pseudolabel[{rank}]", disable=not progress)
        for ref, img in bar:
            if pending and (len(pending) == batch_size or pending[0][1].shape != img.shape):
                flush()
            pending.append((ref, img))
        if pending:
            flush()
        for f in futures:
            hist[:] += f.result()
    finally:
        if threads is not None:
            threads.shutdown(wait=True)  # labels already computed are written, even on an error
    return hist
