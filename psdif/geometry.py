"""Camera geometry of view synthesis (paper §3.1, Eq. 1): pose parameterisation, back-projection,
projection, warping, intrinsics pyramid and the sigmoid -> depth conversion (design.md §3).

Conventions (as in Monodepth2, design.md §4.2):
- intrinsics ``K`` / ``inv_K`` are ``[B, 4, 4]`` in pixels of the image they are used with;
- a pose ``T`` maps homogeneous camera points of the target frame to the source frame:
  ``X_src = T @ X_tgt`` (``[B, 4, 4]``);
- pixel ``(u, v)`` is the centre of column ``u``, row ``v``; normalised grid coordinates follow
  ``grid_sample(align_corners=True)``: ``x_n = 2 u / (W - 1) - 1``.

Every function takes any batch size and resolution (nothing is bound at construction), does no
host-device synchronisation and has no Python branch on tensor values, so a training step built from
them can be compiled or captured as a CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS_PROJ = 1e-7     # added to the camera z before the perspective division
_EPS_ANGLE = 1e-12   # added to |v|^2 so the rotation angle (and its gradient) is finite at v = 0


# ------------------------------------------------------------------------------------- pose parameters

def _skew(axis: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[a]_x``: axis ``[B, 3]`` -> ``[B, 3, 3]``."""
    zero = torch.zeros_like(axis[:, 0])
    ax, ay, az = axis.unbind(1)
    return torch.stack([
        torch.stack([zero, -az, ay], 1),
        torch.stack([az, zero, -ax], 1),
        torch.stack([-ay, ax, zero], 1),
    ], 1)


def rot_from_axisangle(vec: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula).

    vec: ``[B, 1, 3]`` (or ``[B, 3]``) radians, direction = axis, norm = angle.
    Returns ``[B, 4, 4]`` homogeneous rotations ``R = I + sin(th) [a]_x + (1 - cos(th)) [a]_x^2``.
    """
    v = vec.reshape(vec.shape[0], 3)
    angle = torch.sqrt((v * v).sum(1, keepdim=True) + _EPS_ANGLE)       # [B, 1]
    axis = v / angle
    k = _skew(axis)
    sin = torch.sin(angle)[:, :, None]
    one_minus_cos = (1.0 - torch.cos(angle))[:, :, None]
    eye3 = torch.eye(3, dtype=v.dtype, device=v.device).expand(v.shape[0], 3, 3)
    r3 = eye3 + sin * k + one_minus_cos * (k @ k)
    rot = torch.zeros(v.shape[0], 4, 4, dtype=v.dtype, device=v.device)
    rot[:, :3, :3] = r3
    rot[:, 3, 3] = 1.0
    return rot


def translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """Homogeneous translations: ``[B, 1, 3]`` (or ``[B, 3]``) metres -> ``[B, 4, 4]``."""
    t = translation.reshape(translation.shape[0], 3)
    mat = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    mat[:, :3, 3] = t
    return mat


def transformation_from_parameters(axisangle: torch.Tensor, translation: torch.Tensor,
                                   invert: bool = False) -> torch.Tensor:
    """Pose matrix from PoseNet outputs (design.md §7 interface, Monodepth2 meaning).

    axisangle, translation: ``[B, 1, 3]`` (or ``[B, 3]``); radians, metres.
    Returns ``M = T(t) @ R`` ``[B, 4, 4]``, or with ``invert=True`` its inverse ``R^T @ T(-t)``
    (used for the source frame before t, whose pair was fed to PoseNet in temporal order).
    """
    rot = rot_from_axisangle(axisangle)
    t = translation.reshape(translation.shape[0], 3)
    if invert:
        return rot.transpose(1, 2) @ translation_matrix(-t)
    return translation_matrix(t) @ rot


# ------------------------------------------------------------------------------------------- intrinsics

def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of an image resized by ``sx`` horizontally and ``sy`` vertically.

    K: ``[B, 4, 4]`` (or ``[4, 4]``) pixels. Rows 0 (fx, skew, cx) and 1 (fy, cy) are multiplied by
    ``sx`` / ``sy`` (the Monodepth2 convention: normalised K times the image size).
    """
    scale = torch.tensor([sx, sy, 1.0, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def intrinsics_pyramid(K: torch.Tensor, num_scales: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(K_s, inv_K_s)`` for scales ``s = 0 .. num_scales-1`` (image side divided by ``2^s``).

    K: ``[B, 4, 4]`` pixels at scale 0. Returns two lists of ``[B, 4, 4]``.
    """
    ks = [scale_intrinsics(K, 0.5 ** s, 0.5 ** s) for s in range(num_scales)]
    return ks, [torch.linalg.inv(k) for k in ks]


# ------------------------------------------------------------------------------- projection and warping

def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates ``[3, H*W]`` (rows u, v, 1), row-major over (v, u)."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)], 0)


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Lift every pixel to 3-D: ``X = D(p) K^-1 p`` (Eq. 1, right part).

    depth: ``[B, 1, H, W]`` metres; inv_K: ``[B, 4, 4]``.
    Returns homogeneous camera points ``[B, 4, H*W]`` (metres, last row 1).
    """
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, depth.device, depth.dtype)                       # [3, HW]
    rays = inv_K[:, :3, :3].to(depth.dtype) @ pix                          # [B, 3, HW]
    points = rays * depth.reshape(b, 1, h * w)
    return torch.cat([points, torch.ones_like(points[:, :1])], 1)


def project_to_pixels(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera points into the source view: ``p_s ~ K T X`` (Eq. 1, left part).

    points: ``[B, 4, N]``; K, T: ``[B, 4, 4]``.
    Returns pixel coordinates ``[B, 2, N]`` (u, v in pixels) and the source-camera depth ``z`` ``[B, 1, N]``.
    """
    cam = ((K @ T)[:, :3, :]).to(points.dtype) @ points                    # [B, 3, N]
    z = cam[:, 2:3]
    return cam[:, :2] / (z + _EPS_PROJ), z


def normalise_pixels(pix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates ``[B, 2, H*W]`` -> grid ``[B, H, W, 2]`` in [-1, 1] (align_corners=True)."""
    b = pix.shape[0]
    size = torch.tensor([width - 1, height - 1], dtype=pix.dtype, device=pix.device)
    grid = pix / size[None, :, None] * 2.0 - 1.0
    return grid.reshape(b, 2, height, width).permute(0, 2, 3, 1)


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling grid of the target pixels in the source image.

    points: ``[B, 4, H*W]`` from :func:`backproject`; K, T: ``[B, 4, 4]``.
    Returns ``[B, H, W, 2]`` (x, y) normalised to [-1, 1] with ``align_corners=True`` semantics.
    """
    pix, _ = project_to_pixels(points, K, T)
    return normalise_pixels(pix, height, width)


def warp(src: torch.Tensor, depth: torch.Tensor, T_target_to_src: torch.Tensor, K: torch.Tensor,
         inv_K: torch.Tensor, mode: str = "bilinear", return_grid: bool = False):
    """Synthesise the target view from a source image (view synthesis of paper §3.1).

    src: ``[B, C, H, W]`` source image; depth: ``[B, 1, H, W]`` target depth (metres);
    T_target_to_src, K, inv_K: ``[B, 4, 4]`` at this resolution. Sampling: ``grid_sample`` with
    ``mode``, ``padding_mode="border"``, ``align_corners=True``.
    Returns the warped ``[B, C, H, W]``, and with ``return_grid=True`` also the grid ``[B, H, W, 2]``.
    """
    h, w = depth.shape[-2:]
    grid = project(backproject(depth, inv_K), K, T_target_to_src, h, w)
    warped = F.grid_sample(src, grid.to(src.dtype), mode=mode, padding_mode="border", align_corners=True)
    return (warped, grid) if return_grid else warped


# ---------------------------------------------------------------------------------------- depth range

def sigmoid_to_disparity(sigmoid, min_depth: float, max_depth: float):
    """The network's sigmoid output σ in [0, 1] -> scaled disparity ``1/max_depth + (1/min_depth - 1/max_depth)·σ``.

    The one home of this mapping (training, evaluation, figures, ``psdif predict``). Works on torch tensors and
    numpy arrays alike and keeps their dtype; ``min_depth`` / ``max_depth`` are the model's depth range
    (``model.min_depth``, ``model.max_depth``: 0.1 m and 100 m), not the evaluation cap.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    return min_disp + (max_disp - min_disp) * sigmoid


def disp_to_depth(sigmoid: torch.Tensor, min_depth: float, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid output -> ``(disp_scaled, depth)``, ``depth = 1 / disp_scaled`` in metres (Monodepth2's convention)."""
    scaled = sigmoid_to_disparity(sigmoid, min_depth, max_depth)
    return scaled, 1.0 / scaled
