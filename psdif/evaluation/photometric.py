"""Evaluation without depth ground truth (issue 21, your own videos): the self-supervised photometric score of a
trained depth + pose net on held-out frames, and a depth video to look at.

The score is the training objective's photometric part at scale 0 (paper §3.3, Eqs. 1, 14-16; design.md §2),
measured, not optimised: for each target frame t with its neighbours t-1, t+1 of the same drive, the depth net's
sigmoid becomes depth (:func:`psdif.geometry.disp_to_depth`, the model's range), the pose net gives T_{t->s}
(:func:`psdif.models.pose.predict_poses`), each source is warped into t (:func:`psdif.geometry.warp`) and
compared with t by Eq. 15 (:func:`psdif.losses.photometric_error`, alpha = ``loss.alpha``). Per pixel:

- the minimum over the two warped sources (Eq. 14);
- the minimum over the two unwarped sources, the identity error: what a model of no motion gives;
- kept (the auto-mask, Eq. 16, as ``loss.automask`` in training): the warped minimum is below the identity
  minimum. Where the unwarped source is at least as good the pixel is excluded; a difference under 1e-5 (the
  training's tie-break noise, :data:`psdif.losses.AUTOMASK_NOISE`) counts as a tie, so float rounding does not
  decide a pixel (one projecting out of view samples the border pixel the identity compares, give or take
  1e-8). :func:`psdif.losses.min_reprojection` with the identity errors lowered by that margin.

Reported (pixels pooled over all images, which share the network size):

- ``photo_err``: mean warped minimum over the kept pixels. When no pixel is kept (every source already matches
  the target unwarped, e.g. a static camera) it is ``photo_err_identity``: with nothing kept the motion model
  explains nothing beyond the identity, so it is never reported better than that (never NaN);
- ``photo_err_all``: mean warped minimum over every pixel (no auto-mask), like for like with
- ``photo_err_identity``: the mean identity minimum over every pixel;
- ``photo_mask_fraction``: kept pixels / all pixels;
- ``n_images`` (and from :func:`evaluate_photometric` ``n_skipped``: targets without both neighbours on disk).

Lower is better for the three errors; a model whose ``photo_err_all`` is not below ``photo_err_identity``
does worse than assuming no motion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psdif.data import kitti
from psdif.data.dataset import camera_intrinsics
from psdif.data.images import read_image, resize_image
from psdif.geometry import disp_to_depth, warp
from psdif.io import check_writable
from psdif.losses import AUTOMASK_NOISE, min_reprojection, photometric_error
from psdif.models.pose import FRAME_ORDER, predict_poses
from psdif.process import progress_bar

# K of a frame at network size [4, 4] pixels: data.intrinsics ("calib": the drive's calib_cam_to_cam.txt, or
# "kitti_normalised"), or a callable (frame, (h, w) of its image on disk) -> [3|4, 3|4] K in pixels of that image
IntrinsicsSource = str | Callable[[kitti.FrameRef, tuple[int, int]], np.ndarray]


# ------------------------------------------------------------------------------------------------- score

@torch.no_grad()
def photometric_maps(depth_net: nn.Module, pose_net: nn.Module, images: torch.Tensor, K: torch.Tensor,
                     min_depth: float, max_depth: float, alpha: float = 0.85
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel errors of one batch (module docstring).

    images: ``[B, 3, 3, H, W]`` RGB in [0, 1], frames in :data:`psdif.models.pose.FRAME_ORDER` (t, t-1, t+1);
    K: ``[B, 4, 4]`` pixels at (H, W); ``depth_net.forward_depth([B, 3, H, W]) -> [B, 1, h, w]`` sigmoid;
    ``pose_net(pair [B, 6, H, W]) -> (axisangle, translation)``. Returns (warped minimum ``[B, 1, H, W]``,
    identity minimum ``[B, 1, H, W]``, kept ``[B, 1, H, W]`` bool).
    """
    h, w = images.shape[-2:]
    target = images[:, FRAME_ORDER.index(0)]
    sigmoid = depth_net.forward_depth(target).float()
    if sigmoid.shape[-2:] != (h, w):
        sigmoid = F.interpolate(sigmoid, size=(h, w), mode="bilinear", align_corners=False)
    depth = disp_to_depth(sigmoid, min_depth, max_depth)[1]
    poses = predict_poses(pose_net, images)
    inv_K = torch.linalg.inv(K)
    sources = {s: images[:, FRAME_ORDER.index(s)] for s in (-1, 1)}
    reproj = torch.cat([photometric_error(warp(src, depth, poses[s].float(), K, inv_K), target, alpha)
                        for s, src in sources.items()], 1)                                       # [B, 2, H, W]
    identity = torch.cat([photometric_error(src, target, alpha) for src in sources.values()], 1)
    kept = min_reprojection(reproj, identity, noise=torch.full_like(identity, -AUTOMASK_NOISE)).automask
    return reproj.min(1, keepdim=True).values, identity.min(1, keepdim=True).values, kept


def photometric_score(depth_net: nn.Module, pose_net: nn.Module, triplets: Iterable[tuple[np.ndarray, np.ndarray]],
                      min_depth: float, max_depth: float, alpha: float = 0.85, batch_size: int = 8,
                      device: str | torch.device = "cpu", progress: bool = False,
                      total: int | None = None) -> dict[str, float]:
    """The photometric score (module docstring) over ``triplets``: ``(images uint8 [3, H, W, 3]`` in
    (t, t-1, t+1) order at the network size, ``K [4, 4]`` (or ``[3, 3]``) pixels at that size``)``.

    ``min_depth`` / ``max_depth``: the model's depth range (``model.min_depth`` / ``model.max_depth``);
    ``alpha``: ``loss.alpha``. Returns ``{photo_err, photo_err_all, photo_err_identity, photo_mask_fraction,
    n_images}`` as plain floats (``n_images`` an int); no triplet is an error.
    """
    sums = np.zeros(4)          # kept warped error, warped error, identity error, kept pixels
    n_images = n_pixels = 0
    images: list[np.ndarray] = []
    Ks: list[np.ndarray] = []

    def flush():
        nonlocal n_images, n_pixels
        x = torch.from_numpy(np.stack(images)).to(device).permute(0, 1, 4, 2, 3).float().div_(255)
        k = torch.from_numpy(np.stack(Ks)).to(device=device, dtype=torch.float32)
        err, identity, kept = photometric_maps(depth_net, pose_net, x, k, min_depth, max_depth, alpha)
        sums[:] += [float(v) for v in (torch.where(kept, err, 0).sum(), err.sum(), identity.sum(), kept.sum())]
        n_images += len(images)
        n_pixels += err.numel()
        images.clear()
        Ks.clear()

    depth_net.eval()
    pose_net.eval()
    for frames, K in progress_bar(triplets, total=total, desc="photometric", unit="img", disable=not progress):
        if frames.ndim != 4 or frames.shape[0] != 3 or frames.shape[-1] != 3:
            raise ValueError(f"triplet {n_images + len(images)}: images must be uint8 [3, H, W, 3] "
                             f"(t, t-1, t+1), got {frames.shape}")
        K4 = np.eye(4, dtype=np.float32)
        K4[:3, :3] = np.asarray(K, np.float32)[:3, :3]
        images.append(frames)
        Ks.append(K4)
        if len(images) == batch_size:
            flush()
    if images:
        flush()
    if n_images == 0:
        raise ValueError("photometric score: no frame triplet to score (every target lacks a neighbour t-1 or "
                         "t+1 on disk, or the frame list is empty)")
    kept_err, err, identity, kept = sums.tolist()
    identity_mean = identity / n_pixels
    return {"photo_err": kept_err / kept if kept else identity_mean, "photo_err_all": err / n_pixels,
            "photo_err_identity": identity_mean, "photo_mask_fraction": kept / n_pixels, "n_images": n_images}


# ------------------------------------------------------------------------------------------ frames on disk

def read_triplet(raw_root: str | Path, ref: kitti.FrameRef, img_ext: str, height: int, width: int,
                 intrinsics: IntrinsicsSource = "calib") -> tuple[np.ndarray, np.ndarray] | None:
    """``(images uint8 [3, height, width, 3]`` (t, t-1, t+1, resized as in training), ``K [4, 4]`` at that
    size``)`` of a target frame of the KITTI layout, or None when t-1 or t+1 is not on disk (first or last frame
    of a drive). A missing target is an error naming it.

    ``intrinsics``: ``"calib"`` / ``"kitti_normalised"`` (``data.intrinsics``: training's K,
    :func:`psdif.data.dataset.camera_intrinsics`) or a callable ``(ref, (h, w) on disk) -> K`` in pixels of the
    image on disk, scaled here as training scales it (row 0 x width / w, row 1 x height / h).
    """
    paths = [kitti.image_path(raw_root, ref.shifted(o), img_ext) for o in FRAME_ORDER]
    if not paths[0].is_file():
        raise FileNotFoundError(f"{paths[0]}: test frame {ref.line()} not on disk")
    if not all(p.is_file() for p in paths[1:]):
        return None
    raw = [read_image(p) for p in paths]
    image_hw = raw[0].shape[:2]
    if isinstance(intrinsics, str):
        K = camera_intrinsics(raw_root, ref, image_hw, (height, width), intrinsics)
    else:
        K = np.eye(4, dtype=np.float32)
        K[:3, :3] = np.asarray(intrinsics(ref, image_hw), np.float32)[:3, :3]
        K[0] *= width / image_hw[1]
        K[1] *= height / image_hw[0]
    return np.stack([resize_image(im, height, width) for im in raw]), K


def evaluate_photometric(depth_net: nn.Module, pose_net: nn.Module, raw_root: str | Path,
                         frames: Sequence[kitti.FrameRef], img_ext: str, height: int, width: int,
                         min_depth: float, max_depth: float, intrinsics: IntrinsicsSource = "calib",
                         alpha: float = 0.85, batch_size: int = 8, device: str | torch.device = "cpu",
                         progress: bool = False) -> dict[str, float]:
    """:func:`photometric_score` over test frames of the KITTI layout (:func:`read_triplet`), plus ``n_skipped``:
    the targets left out because t-1 or t+1 is not on disk."""
    skipped = 0

    def triplets():
        nonlocal skipped
        for ref in progress_bar(frames, desc="photometric", unit="img", disable=not progress):
            triplet = read_triplet(raw_root, ref, img_ext, height, width, intrinsics)
            if triplet is None:
                skipped += 1
            else:
                yield triplet

    score = photometric_score(depth_net, pose_net, triplets(), min_depth, max_depth, alpha, batch_size, device)
    return {**score, "n_skipped": skipped}


# ------------------------------------------------------------------------------------------------ video

def write_depth_video(path: str | Path, rgb_frames: Sequence[np.ndarray], depths: Sequence[np.ndarray],
                      fps: float) -> Path:
    """An ``.mp4`` (mp4v) of each RGB frame (uint8 [H, W, 3]) beside its depth ([H, W], metres or relative),
    [H, 2W, 3] a frame. The depth is shown as inverse depth in the colour map of psdif's figures and
    ``psdif predict`` (:func:`psdif.evaluation.evaluate.colourise`: magma, near = bright, scaled per frame).
    Written to a temporary ``.mp4`` beside ``path`` and renamed when complete. Returns ``path``."""
    import cv2

    from psdif.evaluation.evaluate import colourise

    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: a depth video must be an .mp4 file")
    if len(rgb_frames) != len(depths) or not len(depths):
        raise ValueError(f"{path}: {len(rgb_frames)} frames and {len(depths)} depth maps (need as many, at least 1)")
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.mp4")
    writer = None
    try:
        for n, (rgb, depth) in enumerate(zip(rgb_frames, depths)):
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or depth.shape != rgb.shape[:2]:
                raise ValueError(f"{path}: frame {n}: need RGB uint8 [H, W, 3] and depth [H, W] of the same size, "
                                 f"got {rgb.shape} {rgb.dtype} and {depth.shape}")
            frame = np.concatenate([rgb, colourise(1.0 / np.maximum(depth.astype(np.float64), 1e-6))], axis=1)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f"{path}: OpenCV cannot open an mp4v video writer ({frame.shape[1]} x "
                                       f"{frame.shape[0]} at {fps} fps); is this OpenCV built with FFmpeg?")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return path
