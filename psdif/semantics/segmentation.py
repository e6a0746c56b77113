"""Semantic pseudo-labels: the Cityscapes DeepLabv3+ / ResNet-101 teacher, the in-pipeline teacher, storage.

Two sources of the 19-class Cityscapes train-id labels that supervise the semantic head (SPEC §1, §4.5):

* real KITTI: the public checkpoint ``best_deeplabv3plus_resnet101_cityscapes_os16.pth``
  (:func:`load_cityscapes_deeplab` rebuilds its exact architecture and loads it strictly);
* embedded default: a DeepLabv3+ of the same family (segmentation_models_pytorch, small encoder, no
  pretrained weights) trained here on the generator's labelled frames (:func:`build_teacher`,
  :func:`train_teacher`).

Labels are stored as 8-bit PNGs (train ids) in the KITTI raw layout
``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png``, written atomically (:func:`label_frames`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from psdif.semantics.boundary import save_png_atomic
from psdif.io import save_torch

__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "CheckpointError", "CityscapesDeepLabV3Plus",
    "load_cityscapes_deeplab", "describe_model", "normalize_images", "build_teacher", "CLASS_WEIGHTINGS",
    "class_weights", "train_teacher",
    "save_teacher", "load_teacher", "predict_labels", "evaluate_miou", "label_path", "write_label_png",
    "read_label_png", "label_frames",
]

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# The usual Cityscapes colours of the 19 train ids (for figures only).
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], np.uint8)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the architecture; the message names it."""


# ===================================================================== Cityscapes DeepLabv3+ / ResNet-101

class _ResNet101OS16(nn.Module):
    """torchvision ResNet-101 trunk (no avgpool / fc) at output stride 16.

    ``replace_stride_with_dilation=[False, False, True]``: layer4 keeps stride 1; its first block is
    undilated (torchvision gives it the previous dilation, 1) and blocks 2-3 use dilation 2.
    Parameter names are torchvision's, so the checkpoint's ``backbone.*`` keys load as they are.
    """

    def __init__(self):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] -> (low-level layer1 [B, 256, H/4, W/4], layer4 [B, 2048, H/16, W/16])."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ head of the public Cityscapes checkpoint (SPEC §4.5).

    ``project``: 1x1 256->48 on layer1; ``aspp``: 1x1, three 3x3 convs at rates 6/12/18 and image pooling
    (smp's ASPP with full convolutions: the same modules and key names), 1x1 1280->256 + dropout 0.1;
    ``classifier``: full 3x3 304->256, BN, ReLU, 1x1 256->C. The low-level features come FIRST in the
    concatenation; the ASPP output is resized bilinearly (align_corners=False) to the low-level size.
    """

    def __init__(self, num_classes: int = 19):
        super().__init__()
        from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP

        self.project = _conv_bn_relu(256, 48)
        self.aspp = ASPP(2048, 256, (6, 12, 18), separable=False, dropout=0.1)
        self.classifier = nn.Sequential(_conv_bn_relu(304, 256, 3)[0], nn.BatchNorm2d(256), nn.ReLU(),
                                        nn.Conv2d(256, num_classes, 1))

    def forward(self, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """low: [B, 256, h, w], out: [B, 2048, h', w'] -> logits [B, C, h, w]."""
        low = self.project(low)
        context = F.interpolate(self.aspp(out), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, context], dim=1))


class CityscapesDeepLabV3Plus(nn.Module):
    """DeepLabv3+ / ResNet-101, output stride 16, of ``best_deeplabv3plus_resnet101_cityscapes_os16.pth``.

    forward: ImageNet-normalised RGB [B, 3, H, W] (any H, W) -> logits [B, C, H, W], resized from 1/4
    to the input size bilinearly (align_corners=False). 58.75 M parameters, 674 state tensors
    (BatchNorm running statistics and ``num_batches_tracked`` included, as in the checkpoint).
    """

    input_multiple = 1  # any input size works: no padding needed in predict_labels

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.backbone = _ResNet101OS16()
        self.classifier = _DeepLabV3PlusHead(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, out = self.backbone(x)
        logits = self.classifier(low, out)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def describe_model(model: nn.Module) -> dict:
    """``{"params": trainable + frozen parameter count, "state_tensors": len(state_dict())}``."""
    return {"params": sum(p.numel() for p in model.parameters()), "state_tensors": len(model.state_dict())}


def _state_dict_mismatch(expected: dict, got: dict, limit: int = 5) -> str:
    """Human-readable difference of two state dicts ('' when keys and shapes agree)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [(k, tuple(got[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in got and hasattr(got[k], "shape") and tuple(got[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys, first: {missing[:limit]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys, first: {unexpected[:limit]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches, first: " + ", ".join(
            f"{k}: file {a} vs model {b}" for k, a, b in shapes[:limit]))
    return "; ".join(parts)


def _torch_load(path: Path):
    """``torch.load`` with errors that name the file.

    ``weights_only=False`` because the public checkpoint stores a numpy scalar (``best_score``):
    unpickling can execute code, so only load checkpoint files from a source you trust.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: checkpoint not found; set pseudolabel.checkpoint to the downloaded "
            "best_deeplabv3plus_resnet101_cityscapes_os16.pth, or to null to train the in-pipeline teacher")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, random bytes, pickle of something else
        raise CheckpointError(f"{path}: not a readable torch checkpoint, probably truncated or another "
                              f"format ({type(exc).__name__}: {exc}); download the file again") from None


def load_cityscapes_deeplab(path: str | Path) -> nn.Module:
    """Load the public Cityscapes DeepLabv3+ / ResNet-101 (OS 16) checkpoint strictly (SPEC §4.5, §7).

    path: a dict with ``model_state`` (674 tensors). Returns the model in eval mode on the CPU;
    forward: normalised RGB [B, 3, H, W] -> logits [B, 19, H, W]. Raises FileNotFoundError or
    :class:`CheckpointError` naming the file and the first mismatching keys.
    """
    path = Path(path)
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a dict with key 'model_state' (DeepLabV3Plus-Pytorch "
                              f"checkpoint format), found {found}")
    state = ckpt["model_state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'model_state' is a {type(state).__name__}, expected a state dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    model = CityscapesDeepLabV3Plus(len(CITYSCAPES_CLASSES))
    problem = _state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{path}: 'model_state' does not match DeepLabv3+ / ResNet-101 OS16: {problem}")
    model.load_state_dict(state, strict=True)
    return model.eval()


# ============================================================================= in-pipeline teacher (smp)

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
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def build_teacher(encoder: str, num_classes: int = 19, decoder_channels: int = 256) -> nn.Module:
    """smp DeepLabV3Plus with encoder ``encoder`` (e.g. ``resnet18``), random init (no download).

    ``decoder_channels``: width of the ASPP / decoder (256 in DeepLabv3+; fewer makes a CPU teacher cheap).

    Inputs must be multiples of 16 (smp's output stride); :func:`predict_labels` pads and crops.
    """
    import segmentation_models_pytorch as smp

    model = smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=num_classes,
                              decoder_channels=decoder_channels)
    model.input_multiple = 16
    model.teacher_encoder = encoder
    model.teacher_decoder_channels = decoder_channels
    return model


def _load_rgb(item) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from psdif.data.kitti import read_image
    return read_image(item)


def _load_samples(samples, progress: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Images and labels in memory: uint8 [H, W, 3] and uint8 [H, W]."""
    from tqdm import tqdm

    out = []
    for image, label in tqdm(samples, desc="load teacher data", disable=not progress):
        img = _load_rgb(image)
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
        lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
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
    training labels' pixel counts. Deterministic for a given seed on the CPU. The model ends in eval mode.
    """
    from tqdm import tqdm

    if height % 16 or width % 16:
        raise ValueError(f"teacher crop {height}x{width} must be multiples of 16 (smp output stride)")
    data = _load_samples(samples, progress)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    num_classes = model.segmentation_head[0].out_channels
    weights = class_weights(_label_counts(data, num_classes), class_weighting)
    weight_t = None if class_weighting == "none" else torch.tensor(weights, dtype=torch.float32, device=device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (1 - i / steps) ** 0.9)
    losses, start = [], time.perf_counter()
    bar = tqdm(range(steps), desc="teacher", disable=not progress)
    for _ in bar:
        idx = rng.integers(0, len(data), batch_size)
        pairs = [_augment(*data[i], height, width, scale, rng) for i in idx]
        x = normalize_images(np.stack([p[0] for p in pairs])).to(device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs])).long().to(device)
        loss = F.cross_entropy(model(x), y, weight=weight_t, ignore_index=IGNORE_INDEX)
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
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = build_teacher(ckpt["encoder"], ckpt["num_classes"], ckpt.get("decoder_channels", 256))
        model.load_state_dict(ckpt["model_state"])
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable teacher checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it and rerun the pseudolabel stage") from None
    return model.eval()


# ================================================================================ inference, evaluation

def _input_multiple(model: nn.Module) -> int:
    return int(getattr(model, "input_multiple", 16))


def predict_logits(model: nn.Module, images, device: str | torch.device | None = None) -> torch.Tensor:
    """Logits at full image size: images uint8 [B, H, W, 3] (or normalised float [B, 3, H, W]) ->
    float [B, C, H, W] on ``device``.

    Models that need sizes divisible by ``model.input_multiple`` (16 for smp) get the input padded
    bottom/right by edge replication and the logits cropped back (no resampling of the labels).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = normalize_images(images).to(device)
    h, w = x.shape[-2:]
    m = _input_multiple(model)
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return model(x)[..., :h, :w]


def predict_labels(model: nn.Module, images, batch_size: int = 8,
                   device: str | torch.device | None = None) -> np.ndarray:
    """Argmax train ids at FULL image size: images uint8 [B, H, W, 3] -> uint8 [B, H, W].

    Batched, on the GPU when available (``device=None``); the model is put in eval mode.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    n = len(images)
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            logits = predict_logits(model, images[i:i + batch_size], device)
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
    from tqdm import tqdm

    conf = np.zeros((num_classes, num_classes), np.int64)
    batch: list[tuple[np.ndarray, np.ndarray]] = []

    def flush():
        pred = predict_labels(model, np.stack([b[0] for b in batch]), batch_size, device)
        conf[...] += confusion_matrix(np.stack([b[1] for b in batch]), pred, num_classes)
        batch.clear()

    for image, label in tqdm(samples, desc="teacher mIoU", disable=not progress):
        img = _load_rgb(image)
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
    """``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png`` (side ``l``/``r`` or camera 2/3)."""
    return Path(root) / folder / f"image_0{_cam(side)}" / "data" / f"{int(frame):010d}.png"


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Store train ids uint8 [H, W] as an 8-bit greyscale PNG, atomically (temp file + os.replace)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be [H, W], got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError(f"{path}: labels outside 0..255 cannot be stored as an 8-bit PNG")
        labels = labels.astype(np.uint8)
    save_png_atomic(Image.fromarray(labels), path)  # uint8 [H, W] -> mode L


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit label PNG -> uint8 [H, W]; a missing, truncated or corrupt file raises naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: label PNG not found; run the pseudolabel stage (dvc repro pseudolabel)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P"):
                raise ValueError(f"mode {im.mode}, expected 8-bit greyscale (L)")
            return np.array(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: corrupt or truncated label PNG ({exc}); delete it and rerun the "
                         "pseudolabel stage") from None


def label_frames(model_fn: Callable[[np.ndarray], np.ndarray], frames: Sequence, image_loader: Callable,
                 out_root: str | Path, batch_size: int, skip_existing: bool = True, rank: int = 0,
                 world_size: int = 1, progress: bool = True, num_classes: int = 19) -> np.ndarray:
    """Label frames and store them as PNGs; resumable, shardable, batched.

    frames: objects with ``folder``, ``frame``, ``side`` (psdif.data.kitti.FrameRef). This call handles
    ``frames[rank::world_size]``. image_loader(frame) -> uint8 [H, W, 3]; model_fn(uint8 [B, H, W, 3])
    -> uint8 [B, H, W] train ids. Existing outputs are complete (atomic writes) and are skipped when
    ``skip_existing`` (still counted in the histogram). Consecutive frames of equal size share a batch.
    Returns the class histogram int64 [num_classes] (pixels per train id) over this shard.
    """
    from tqdm import tqdm

    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    hist = np.zeros(num_classes, np.int64)

    def count(labels: np.ndarray, where) -> None:
        top = int(labels.max()) if labels.size else 0
        if top >= num_classes:
            raise ValueError(f"{where}: label {top} >= num_classes={num_classes}")
        hist[:] += np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]

    pending: list[tuple[object, np.ndarray]] = []

    def flush() -> None:
        labels = np.asarray(model_fn(np.stack([img for _, img in pending])))
        if labels.shape != (len(pending),) + pending[0][1].shape[:2]:
            raise ValueError(f"model_fn returned {labels.shape} for {len(pending)} images of "
                             f"{pending[0][1].shape[:2]}")
        for (ref, _), lab in zip(pending, labels):
            count(lab, label_path(out_root, ref.folder, ref.side, ref.frame))
            write_label_png(label_path(out_root, ref.folder, ref.side, ref.frame), lab)
        pending.clear()

    for ref in tqdm(list(frames)[rank::world_size], desc=f"pseudolabel[{rank}]", disable=not progress):
        out = label_path(out_root, ref.folder, ref.side, ref.frame)
        if skip_existing and out.exists():
            count(read_label_png(out), out)
            continue
        img = image_loader(ref)
        if pending and (len(pending) == batch_size or pending[0][1].shape != img.shape):
            flush()
        pending.append((ref, img))
    if pending:
        flush()
    return hist
