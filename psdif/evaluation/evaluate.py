"""Running a depth net over test sets: batched prediction, the Eigen and Make3D protocols, reference rows.

The per-image protocols live in :mod:`psdif.evaluation.metrics`; this module feeds them: images resized to the
network size exactly as in training (``psdif.data.images.resize_image``), the scale-0 sigmoid disparity
predicted in batches (optionally with flip post-processing), then evaluated against the GT; on generated data
also against its dense depth and semantic labels (boundary metrics, design.md §4.6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch import nn
from psdif.process import progress_bar

from psdif.data.images import read_image
from psdif.evaluation.metrics import CONSTANT_SPREAD, disparity_spread  # noqa: F401  (re-exported)
from psdif.data import kitti
from psdif.data.images import resize_image
from psdif.evaluation.metrics import (MAKE3D_KEYS, evaluate_boundaries, evaluate_depth, evaluate_make3d,
                                      flip_post_process, summarise, summarise_boundaries)
from psdif.semantics.cityscapes import CITYSCAPES_CLASSES


class ConstantDisparity(nn.Module):
    """The ``flat`` reference row: the same disparity everywhere (depth = median GT after scaling)."""

    def __init__(self, value: float = 0.5):
        super().__init__()
        self.value = value

    def forward_depth(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full_like(images[:, :1], self.value)


@torch.no_grad()
def predict_sigmoids(net: nn.Module, images: Iterable[np.ndarray], height: int, width: int,
                     batch_size: int = 8, post_process: bool = False, device: str | torch.device = "cpu",
                     progress: bool = False, total: int | None = None) -> list[np.ndarray]:
    """Scale-0 sigmoid disparities ``float32 [height, width]`` for RGB uint8 images of any size.

    ``net.forward_depth(images [B, 3, h, w] in [0, 1]) -> [B, 1, h, w]``. With ``post_process`` the
    mirrored image is predicted too and blended (Monodepth v1, :func:`psdif.evaluation.metrics.flip_post_process`).
    """
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush():
        x = torch.from_numpy(np.stack(batch)).to(device).permute(0, 3, 1, 2).float().div_(255)
        if post_process:
            both = net.forward_depth(torch.cat([x, x.flip(-1)]))[:, 0].float().cpu().numpy()
            n = len(batch)
            out.extend(flip_post_process(both[i], both[n + i]) for i in range(n))
        else:
            out.extend(net.forward_depth(x)[:, 0].float().cpu().numpy())
        batch.clear()

    for img in progress_bar(images, total=total, desc="predict", unit="img", disable=not progress):
        batch.append(resize_image(img, height, width))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return out


def evaluate_eigen(net: nn.Module, raw_root: Path, frames: Sequence[kitti.FrameRef], gt_depths: Sequence[np.ndarray],
                   height: int, width: int, img_ext: str, eval_cfg, disp_range: tuple[float, float],
                   device="cpu", progress: bool = False,
                   protocol: str = "eigen") -> tuple[dict, list[dict], list[np.ndarray]]:
    """Eigen (or ``eigen_benchmark``) protocol over a test split: (summary, per-image results, sigmoid
    predictions)."""
    if len(frames) != len(gt_depths):
        raise ValueError(f"{len(frames)} test frames but {len(gt_depths)} GT maps: re-run the export_gt stage")
    images = (read_image(kitti.image_path(raw_root, f, img_ext)) for f in frames)
    sigmoids = predict_sigmoids(net, images, height, width, eval_cfg.batch_size, eval_cfg.post_process,
                                device, progress, len(frames))
    per_image = [evaluate_depth(s, gt, True, eval_cfg.min_depth, eval_cfg.max_depth, disp_range, protocol)
                 for s, gt in zip(sigmoids, gt_depths)]
    return summarise(per_image), per_image, sigmoids


def evaluate_make3d_set(net: nn.Module, samples, height: int, width: int, eval_cfg,
                        disp_range: tuple[float, float], device="cpu", progress: bool = False) -> dict:
    """Make3D protocol (design.md §4.4) over loaded samples (:func:`psdif.data.make3d.load_make3d_test`)."""
    sigmoids = predict_sigmoids(net, (s.image for s in samples), height, width, eval_cfg.batch_size,
                                eval_cfg.post_process, device, progress, len(samples))
    per_image = [evaluate_make3d(sig, s.depth_grid, True, eval_cfg.make3d_max_depth, disp_range)
                 for sig, s in zip(sigmoids, samples)]
    return summarise(per_image, MAKE3D_KEYS)


def dense_gt_paths(raw_root: Path, frame: kitti.FrameRef) -> tuple[Path, Path]:
    """(depth PNG, semantic PNG) of a generated frame: ``<raw_root>/synthetic_gt/<drive>/{depth,semantic}_0<cam>/``
    (the generator's exact GT: depth uint16 m x 256, 0 = sky; Cityscapes train ids)."""
    folder = Path(raw_root) / "synthetic_gt" / frame.folder.split("/")[-1]
    name = f"{frame.frame:010d}.png"
    return folder / f"depth_0{frame.cam}" / name, folder / f"semantic_0{frame.cam}" / name


def _read_labels(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
    if labels is None or labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"{path}: missing or not an 8-bit label PNG; the download stage regenerates the "
                         "mini-KITTI's ground truth (dvc repro)")
    return labels


def load_dense_gt(raw_root: Path, frames: Sequence[kitti.FrameRef]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dense depth float32 [H, W] m, labels uint8 [H, W]) of each generated test frame; a missing or
    unreadable file, or maps of different sizes, is an error naming the file."""
    out = []
    for frame in frames:
        depth_path, label_path = dense_gt_paths(raw_root, frame)
        if not depth_path.is_file():
            raise ValueError(f"{depth_path}: dense GT of test frame {frame.line()} is missing; the download stage "
                             "regenerates the mini-KITTI's ground truth (dvc repro)")
        depth, labels = kitti.read_depth_png(depth_path), _read_labels(label_path)
        if depth.shape != labels.shape:
            raise ValueError(f"{label_path}: {labels.shape} labels for a {depth.shape} depth map ({depth_path})")
        out.append((depth, labels))
    return out


def evaluate_boundary_set(sigmoids: Sequence[np.ndarray], dense: Sequence[tuple[np.ndarray, np.ndarray]],
                          eval_cfg, disp_range: tuple[float, float]) -> dict:
    """Boundary metrics (design.md §4.6) of the test predictions against the dense GT, mean over images."""
    if len(sigmoids) != len(dense):
        raise ValueError(f"{len(sigmoids)} predictions but {len(dense)} dense GT frames")
    return summarise_boundaries([evaluate_boundaries(s, depth, labels, eval_cfg.min_depth, eval_cfg.max_depth,
                                                     disp_range, CITYSCAPES_CLASSES)
                                 for s, (depth, labels) in zip(sigmoids, dense)])


def untrained_net(model_cfg, seed: int) -> nn.Module:
    """The ``untrained`` reference row: the full network at its seeded initialisation."""
    from psdif.models import build_depth_net, dataclass_replace_weights
    from psdif.variants import get_variant

    torch.manual_seed(seed)
    return build_depth_net(get_variant("full"), dataclass_replace_weights(model_cfg)).eval()


def colourise(depth_like: np.ndarray, cmap: str = "magma", vmax_percentile: float = 95) -> np.ndarray:
    """Disparity-like map [H, W] -> uint8 RGB [H, W, 3] (Monodepth-style colour scaling)."""
    import matplotlib

    vmax = np.percentile(depth_like, vmax_percentile)
    vmin = float(depth_like.min())
    norm = np.clip((depth_like - vmin) / max(vmax - vmin, 1e-9), 0, 1)
    return (matplotlib.colormaps[cmap](norm)[..., :3] * 255).astype(np.uint8)


