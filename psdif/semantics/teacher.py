"""The embedded default's teacher: a DeepLabv3+ (segmentation_models_pytorch, small encoder) trained here.

The generated mini-KITTI has exact semantic ground truth on its training drives; the teacher learns it
(:func:`train_teacher`: random rescaled crops, AdamW, optional class weighting) and then pseudo-labels every
frame exactly as the public Cityscapes checkpoint does on real KITTI (``psdif.semantics.labels``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psdif.io import save_torch
from psdif.torchfile import load_torch
from psdif.seeding import deterministic_kernels, seed_everything
from psdif.semantics.cityscapes import VOID_LABEL
from psdif.semantics.deeplab import CheckpointError
from psdif.semantics.labels import load_rgb, normalize_images, read_label_png


def build_teacher(encoder: str, num_classes: int = 19, decoder_channels: int = 256,
                  seed: int | None = None) -> nn.Module:
    """smp DeepLabV3Plus with encoder ``encoder`` (e.g. ``resnet18``), random init (no download).

    ``decoder_channels``: width of the ASPP / decoder (256 in DeepLabv3+; fewer makes a CPU teacher cheap).
    ``seed``: seed every RNG first (:func:`psdif.seeding.seed_everything`), so that the initial weights
    depend on it alone; None draws them from the process's current random state.

    Inputs must be multiples of 16 (smp's output stride); :func:`predict_labels` pads and crops.
    """
    import segmentation_models_pytorch as smp

    if seed is not None:
        seed_everything(seed)
    model = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=num_classes,
                              decoder_channels=decoder_channels)
    model.input_multiple = 16
    model.teacher_encoder = encoder
    model.teacher_decoder_channels = decoder_channels
    return model


def _load_samples(samples, progress: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images and labels in memory: uint8 [H, W, 3] and uint8 [H, W]."""
    from psdif.process import progress_bar

    out = []
    for image, label in progress_bar(samples, desc="load teacher data", disable=not progress):
        img = load_rgb(image)
        lab = label if isinstance(label, np.ndarray) else read_label_png(label)
        if img.shape[:2] != lab.shape:
            raise ValueError(f"image {getattr(image, 'name', '')} {img.shape[:2]} and label "
                             f"{getattr(label, 'name', '')} {lab.shape} differ in size")
        out.append((img, lab))
    if not out:
        raise ValueError("no (image, label) samples to train the teacher on; run the download stage first")
    return out


def _augment(img: np.ndarray, lab: np.ndarray, height: int, width: int, scale: tuple[float, float],
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, crop (label padding = ignore) and horizontal flip -> [height, width(, 3)]."""
    import cv2

    s = rng.uniform(*scale)
    h, w = max(1, round(img.shape[0] * s)), max(1, round(img.shape[1] * s))
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
    ph, pw = max(0, height - h), max(0, width - w)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=VOID_LABEL)
    y = rng.integers(0, img.shape[0] - height + 1)
    x = rng.integers(0, img.shape[1] - width + 1)
    img, lab = img[y:y + height, x:x + width], lab[y:y + height, x:x + width]
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(lab)


CLASS_WEIGHTINGS = ("none", "sqrt_inverse", "median_frequency")


def class_weights(counts, method: str) -> np.ndarray:
    """Per-class cross-entropy weights float64 [C] from the training labels' pixel counts int [C].

    With f_c = counts_c / sum(counts) (classes with f_c = 0 get weight 0: they never occur as targets):

    * ``none``: w_c = 1;
    * ``sqrt_inverse``: w_c ∝ 1 / sqrt(f_c);
    * ``median_frequency``: w_c ∝ median(f over present classes) / f_c (Eigen & Fergus, 2015).

    Weighted methods are scaled so that sum_c f_c w_c = 1 (the mean weight of a training pixel is 1).
    """
    counts = np.asarray(counts, np.float64)
    if method not in CLASS_WEIGHTINGS:
        raise ValueError(f"pseudolabel.teacher_class_weighting={method!r}: expected one of {CLASS_WEIGHTINGS}")
    if method == "none":
        return np.ones_like(counts)
    if counts.sum() <= 0:
        raise ValueError("class weights need at least one labelled (non-void) training pixel")
    f = counts / counts.sum()
    present = f > 0
    w = np.zeros_like(f)
    if method == "sqrt_inverse":
        w[present] = 1.0 / np.sqrt(f[present])
    else:
        w[present] = np.median(f[present]) / f[present]
    return w / (f * w).sum()


def _label_counts(data: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Pixels per train id int64 [num_classes] over the training labels (void 255 and ids >= C ignored)."""
    counts = np.zeros(num_classes, np.int64)
    for _, lab in data:
        counts += np.bincount(lab.ravel(), minlength=256)[:num_classes]
    return counts


def train_teacher(model: nn.Module, samples: Sequence, steps: int, batch_size: int, lr: float,
                  height: int, width: int, seed: int, scale: tuple[float, float] = (0.75, 1.25),
                  weight_decay: float = 1e-4, device: str | None = None, progress: bool = True,
                  class_weighting: str = "none") -> dict:
    """Train a teacher on (image, label) pairs; returns ``{"loss": [per-step CE], "seconds": wall,
    "class_weights": [C] list}``.

    samples: (uint8 [H, W, 3] array or image path, uint8 [H, W] train-id array or PNG path); 255 = void.
    Each step: ``batch_size`` random crops ``height x width`` (multiples of 16) after a random scale in
    ``scale`` and a horizontal flip (p = 0.5); AdamW(lr, weight_decay), poly lr decay (power 0.9),
    cross-entropy ignoring 255, weighted per class by :func:`class_weights` (``class_weighting``) of the
    training labels' pixel counts. Every RNG is seeded from ``seed`` and deterministic kernels are used
    (:mod:`psdif.seeding`): the same model, samples and seed give the same weights bit for bit on a given
    machine. The model ends in eval mode.
    """
    from psdif.process import progress_bar

    if height % 16 or width % 16:
        raise ValueError(f"teacher crop {height}x{width} must be multiples of 16 (smp output stride)")
    data = _load_samples(samples, progress)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = model.segmentation_head[0].out_channels
    weights = class_weights(_label_counts(data, num_classes), class_weighting)
    weight_t = None if class_weighting == "none" else torch.tensor(weights, dtype=torch.float32, device=device)
    seed_everything(seed)
    rng = np.random.default_rng(seed)  # the crops, scales and flips: their own stream, in sample order
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1 - i / steps) ** 0.9)
    losses, start = [], time.perf_counter()
    bar = progress_bar(range(steps), desc="teacher", disable=not progress)
    with deterministic_kernels():
        for _ in bar:
            idx = rng.integers(0, len(data), batch_size)
            pairs = [_augment(*data[i], height, width, scale, rng) for i in idx]
            x = normalize_images(np.stack([p[0] for p in pairs])).to(device)
            y = torch.from_numpy(np.stack([p[1] for p in pairs])).long().to(device)
            loss = F.cross_entropy(model(x), y, weight=weight_t, ignore_index=VOID_LABEL)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return {"loss": losses, "seconds": time.perf_counter() - start, "class_weights": weights.tolist()}


def save_teacher(model: nn.Module, path: str | Path, extra: dict | None = None) -> None:
    """Atomically save a teacher built by :func:`build_teacher` (encoder name, classes, state dict)."""
    num_classes = model.segmentation_head[0].out_channels
    save_torch(path, {"encoder": model.teacher_encoder, "num_classes": num_classes,
                      "decoder_channels": model.teacher_decoder_channels,
                      "model_state": model.state_dict(), **(extra or {})})


def load_teacher(path: str | Path) -> nn.Module:
    """Load a teacher saved by :func:`save_teacher` (our own file: ``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: teacher checkpoint not found; run the pseudolabel stage")
    try:
        ckpt = load_torch(path)  # our own words for a crafted file: torch's advice is not passed on
        model = build_teacher(ckpt["encoder"], ckpt["num_classes"], ckpt.get("decoder_channels", 256))
        model.load_state_dict(ckpt["model_state"])
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable teacher checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it and rerun the pseudolabel stage") from None
    return model.eval()


def is_teacher_file(path: str | Path) -> bool:
    """Whether ``path`` is a teacher saved by psdif (``save_teacher``: the embedded default's
    data/teacher/teacher.pt), which ``pseudolabel.checkpoint`` accepts beside the Cityscapes DeepLabv3+."""
    try:
        ckpt = load_torch(path)
    except (OSError, ValueError):
        return False  # the DeepLabv3+ loader says what is wrong with it
    return isinstance(ckpt, dict) and {"encoder", "num_classes", "model_state"} <= set(ckpt)


def load_labeller(path: str | Path):
    """The network of ``pseudolabel.checkpoint``: a psdif teacher file, or the Cityscapes DeepLabv3+/ResNet-101
    (design.md §4.5); eval mode, CPU, normalised RGB -> 19 Cityscapes logits."""
    from psdif.semantics.deeplab import load_cityscapes_deeplab

    if Path(path).is_file() and is_teacher_file(path):
        return load_teacher(path)
    return load_cityscapes_deeplab(path)
