"""Evaluation protocols: KITTI Eigen (design.md §4.3), Make3D Test134 (design.md §4.4), boundaries (§4.6).

Everything here is numpy on one image at a time, float64 arithmetic, so the numbers can be compared with
the reference evaluation code of the field (Monodepth2's ``evaluate_depth.py``) frame by frame.

Eigen protocol for one test frame (``evaluate_depth``)::

    sigmoid σ [h, w] --disp_scaled = 1/max_d + (1/min_d - 1/max_d)·σ--> disparity [h, w]
      --cv2.resize bilinear to the GT size (W, H)--> disparity [H, W] --1/disp--> depth [H, W] (m)
      mask = (1e-3 < gt < 80) ∩ Eigen crop;  ratio = median(gt) / median(pred);  pred ·= ratio
      pred clamped to [1e-3, 80];  abs_rel, sq_rel, rmse, rmse_log (ln), a1, a2, a3

eigen_benchmark protocol (``protocol="eigen_benchmark"``, KITTI's annotated GT of Uhrig et al. 2017): the same,
but mask = gt > 0 (no crop, no cap on the GT; the prediction is still clamped to [1e-3, 80]).

Make3D protocol (``evaluate_make3d``)::

    σ --disp_scaled--> disparity --1/disp--> depth, cv2.resize nearest to (305 wide, 21 high)
      GT = Position3DGrid[:, :, 3][17:38, :]  (21 x 305 m);  mask 0 < gt < 70;  median scaling;
      pred capped at 70;  abs_rel, sq_rel, rmse, rmse_log on log10 (plus ``log10`` = mean |Δlog10|)

Boundary metrics on dense GT (design.md §4.6; generated data only): the iBims-1 depth boundary error
(``depth_boundary_error``) against GT depth edges of the dense depth (``gt_depth_edges``), and abs_rel / a1
within ``BAND_PX`` px of semantic boundaries, outside them and per class (``band_errors``).

Ragged ground truth (Eigen GT maps of different sizes) is stored by ``save_gt_depths`` as an .npz of
flat values plus shapes, loadable without ``allow_pickle``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from psdif.data.make3d import GRID_SHAPE
from psdif.geometry import sigmoid_to_disparity
from psdif.io import atomic_path

PROTOCOLS = ("eigen", "eigen_benchmark")  # KITTI protocols of evaluate_depth (design.md §4.3)
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
MAKE3D_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log")

# Eigen crop of Garg et al. as fractions of the GT size (rows, then columns); int truncation.
EIGEN_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
# Make3D: GT rows kept (of 55) and the size the prediction is resized to (cv2 dsize = (width, height)).
MAKE3D_GT_ROWS = (17, 38)
MAKE3D_DSIZE = (305, 21)


# ------------------------------------------------------------------------------------------ shared pieces

def sigmoid_to_disp(sigmoid: np.ndarray, min_depth: float = 0.1, max_depth: float = 100.0) -> np.ndarray:
    """:func:`psdif.geometry.sigmoid_to_disparity` computed in float64 and returned as float32 (σ's shape)."""
    return sigmoid_to_disparity(np.asarray(sigmoid, dtype=np.float64), min_depth, max_depth).astype(np.float32)


def _as_2d(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a single [H, W] map (extra axes of size 1 allowed), "
                         f"got shape {np.shape(array)}")
    return array


# ------------------------------------------------------------------------------------------ Eigen (§4.3)

def compute_depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict:
    """The seven KITTI depth metrics of already masked, scaled and clamped depths.

    gt, pred: [N] metres (any shape, same size), all > 0. Returns float64 values:
    abs_rel = mean(|gt−pred|/gt), sq_rel = mean((gt−pred)²/gt), rmse = sqrt(mean((gt−pred)²)),
    rmse_log = sqrt(mean((ln gt − ln pred)²)), a_k = share of max(gt/pred, pred/gt) < 1.25^k.
    """
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt has {gt.size} values but pred has {pred.size}")
    if gt.size == 0:
        raise ValueError("no valid ground-truth pixels to evaluate (empty mask)")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def eigen_crop_mask(h: int, w: int) -> np.ndarray:
    """Garg/Eigen crop as a bool mask [h, w]: rows [0.40810811·h, 0.99189189·h), cols
    [0.03594771·w, 0.96405229·w), bounds truncated to int (KITTI 375×1242 → rows 153..370, cols 44..1196).
    """
    top, bottom, left, right = (np.array(EIGEN_CROP) * [h, h, w, w]).astype(np.int32)
    mask = np.zeros((h, w), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def protocol_mask(gt: np.ndarray, protocol: str, min_depth: float, max_depth: float) -> np.ndarray:
    """The pixels a protocol evaluates, bool [H, W] (design.md §4.3).

    ``eigen``: ``min_depth < gt < max_depth`` inside the Eigen crop. ``eigen_benchmark`` (KITTI's annotated
    GT, Monodepth2's ``mask = gt_depth > 0``): every annotated pixel, no crop and no cap on the GT.
    """
    if protocol == "eigen":
        return (gt > min_depth) & (gt < max_depth) & eigen_crop_mask(*gt.shape)
    if protocol == "eigen_benchmark":
        return gt > 0
    raise ValueError(f"unknown evaluation protocol {protocol!r}; one of {PROTOCOLS}")


def depth_at(pred_disp: np.ndarray, shape: tuple[int, int], disp_range: tuple[float, float] = (0.1, 100.0)
             ) -> np.ndarray:
    """The prediction as depth [H, W] (float64, unscaled) at the GT's ``shape``: the sigmoid [h, w] turned into
    disparity over ``disp_range``, resized bilinearly to (W, H) and inverted (the Eigen protocol's order)."""
    sigmoid = _as_2d("pred_disp", pred_disp).astype(np.float32)
    disp = cv2.resize(sigmoid_to_disp(sigmoid, *disp_range), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return 1.0 / disp.astype(np.float64)


def evaluate_depth(pred_disp: np.ndarray, gt_depth: np.ndarray, median_scaling: bool = True,
                   min_depth: float = 1e-3, max_depth: float = 80.0,
                   disp_range: tuple[float, float] = (0.1, 100.0), protocol: str = "eigen") -> dict:
    """Eigen (default) or eigen_benchmark protocol for one image (design.md §4.3).

    pred_disp: [h, w] the network's sigmoid output at network size (e.g. 192×640).
    gt_depth: [H, W] metres, 0 where there is no depth (e.g. 375×1242): LiDAR projected for ``eigen``,
    KITTI's annotated depth (:func:`psdif.data.kitti.read_improved_depth`) for ``eigen_benchmark``.
    min_depth, max_depth: evaluation range (1e-3, 80 m); disp_range: the model's (min, max) depth used to
    scale the sigmoid (0.1, 100 m). The pixels evaluated are :func:`protocol_mask`'s. With ``median_scaling``
    the prediction is multiplied by ``median(gt)/median(pred)`` over those pixels before clamping to
    [min_depth, max_depth]; otherwise ratio = 1. Returns the seven metrics of ``compute_depth_errors`` plus
    ``ratio`` (float64).
    """
    gt = _as_2d("gt_depth", gt_depth).astype(np.float64)
    gt_h, gt_w = gt.shape
    mask = protocol_mask(gt, protocol, min_depth, max_depth)
    pred = depth_at(pred_disp, gt.shape, disp_range)
    gt_valid, pred_valid = gt[mask], pred[mask]
    if gt_valid.size == 0:
        where = ("annotated (> 0)" if protocol == "eigen_benchmark"
                 else f"in ({min_depth}, {max_depth}) m inside the Eigen crop")
        raise ValueError(f"gt_depth [{gt_h}, {gt_w}] has no pixel {where}; check the GT export")
    ratio = float(np.median(gt_valid) / np.median(pred_valid)) if median_scaling else 1.0
    pred_valid = np.clip(pred_valid * ratio, min_depth, max_depth)
    errors = compute_depth_errors(gt_valid, pred_valid)
    errors["ratio"] = ratio
    return errors


def flip_post_process(disp: np.ndarray, disp_flipped: np.ndarray) -> np.ndarray:
    """Monodepth (v1) flip post-processing of disparities [..., H, W].

    ``disp`` is the prediction for the image, ``disp_flipped`` the prediction for the horizontally flipped
    image, NOT flipped back (this function flips it). With x = linspace(0, 1, W) and the ramp
    ``l_mask = 1 − clip(20·(x − 0.05), 0, 1)`` (1 on the leftmost 5 %, 0 from 10 % on), ``r_mask`` its
    mirror, the result is ``r_mask·disp + l_mask·back + (1 − l_mask − r_mask)·(disp + back)/2``, where
    back = disp_flipped flipped back: the left border comes from the flipped pass, the right border from
    the plain pass, the middle is their mean. The weights sum to 1 everywhere, so the blend commutes
    with the affine sigmoid → disparity map: post-processing the sigmoid outputs and then calling
    ``evaluate_depth`` equals Monodepth2's post-processing of scaled disparities.
    """
    disp = np.asarray(disp, dtype=np.float64)
    back = np.asarray(disp_flipped, dtype=np.float64)[..., ::-1]
    if disp.shape != back.shape:
        raise ValueError(f"disp {disp.shape} and disp_flipped {back.shape} must have the same shape")
    width = disp.shape[-1]
    x = np.linspace(0.0, 1.0, width)
    l_mask = 1.0 - np.clip(20.0 * (x - 0.05), 0.0, 1.0)
    r_mask = l_mask[::-1]
    mean = 0.5 * (disp + back)
    return r_mask * disp + l_mask * back + (1.0 - l_mask - r_mask) * mean


def summarise(per_image: Sequence[dict], keys: Iterable[str] = METRIC_KEYS) -> dict:
    """Mean of each metric over images, plus the median-scaling ratio spread.

    per_image: dicts of ``evaluate_depth`` (or ``evaluate_make3d``). Returns the mean of every key in
    ``keys``, ``ratio_median`` = median of the ratios and ``ratio_std`` = std(ratios / ratio_median)
    (Monodepth2's "Scaling ratios | med | std" line: a relative, unitless spread), and ``n_images``.
    """
    if not per_image:
        raise ValueError("no per-image results to summarise (empty test set?)")
    out = {}
    for key in keys:
        values = np.array([r[key] for r in per_image], dtype=np.float64)
        out[key] = float(values.mean())
    ratios = np.array([r.get("ratio", 1.0) for r in per_image], dtype=np.float64)
    med = float(np.median(ratios))
    out["ratio_median"] = med
    out["ratio_std"] = float(np.std(ratios / med)) if med != 0 else float("nan")
    out["n_images"] = len(per_image)
    return out


# ------------------------------------------------------------------------------------------ Make3D (§4.4)

def make3d_errors(gt: np.ndarray, pred: np.ndarray) -> dict:
    """Make3D metrics of masked, scaled, capped depths [N] (m): abs_rel, sq_rel, rmse and rmse_log, the
    last on log10 (Make3D convention of the Monodepth line of work), plus ``log10`` = mean |log10 gt −
    log10 pred| (the metric older Make3D tables call "log10"). float64.
    """
    gt = np.asarray(gt, dtype=np.float64).ravel()
    pred = np.asarray(pred, dtype=np.float64).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"gt has {gt.size} values but pred has {pred.size}")
    if gt.size == 0:
        raise ValueError("no valid Make3D ground-truth cells to evaluate (empty mask)")
    diff = gt - pred
    dlog = np.log10(gt) - np.log10(pred)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff ** 2))),
        "rmse_log": float(np.sqrt(np.mean(dlog ** 2))),
        "log10": float(np.mean(np.abs(dlog))),
    }


def make3d_gt(depth_grid: np.ndarray) -> np.ndarray:
    """GT depth [21, 305] m from a Make3D grid: ``Position3DGrid[:, :, 3]`` (or an already extracted
    [55, 305] depth channel), rows 17:38 (the band that matches the 2:1 centre crop of the image)."""
    grid = np.asarray(depth_grid)
    if grid.ndim == 3:
        grid = grid[:, :, 3]
    if grid.shape != GRID_SHAPE:
        raise ValueError(f"Make3D depth grid must be {GRID_SHAPE} (x4), got {np.shape(depth_grid)}")
    return grid[MAKE3D_GT_ROWS[0]:MAKE3D_GT_ROWS[1], :].astype(np.float64)


def evaluate_make3d(pred_disp: np.ndarray, depth_grid: np.ndarray, median_scaling: bool = True,
                    max_depth: float = 70.0, disp_range: tuple[float, float] = (0.1, 100.0)) -> dict:
    """Make3D Test134 protocol for one image (design.md §4.4).

    pred_disp: [h, w] sigmoid output for the 2:1 centre crop of the image (network size).
    depth_grid: [55, 305, 4] ``Position3DGrid`` (or its [55, 305] depth channel), metres.
    Depth = 1/disp_scaled, resized nearest to 305 wide × 21 high; mask 0 < gt < max_depth (70 m);
    median scaling; prediction capped at max_depth. Returns ``make3d_errors`` keys plus ``ratio``.
    """
    sigmoid = _as_2d("pred_disp", pred_disp).astype(np.float32)
    gt = make3d_gt(depth_grid)
    depth = (1.0 / sigmoid_to_disp(sigmoid, *disp_range)).astype(np.float32)
    pred = cv2.resize(depth, MAKE3D_DSIZE, interpolation=cv2.INTER_NEAREST).astype(np.float64)
    mask = (gt > 0) & (gt < max_depth)
    gt_valid, pred_valid = gt[mask], pred[mask]
    if gt_valid.size == 0:
        raise ValueError(f"Make3D GT band rows {MAKE3D_GT_ROWS} has no cell in (0, {max_depth}) m")
    ratio = float(np.median(gt_valid) / np.median(pred_valid)) if median_scaling else 1.0
    pred_valid = np.minimum(pred_valid * ratio, max_depth)
    errors = make3d_errors(gt_valid, pred_valid)
    errors["ratio"] = ratio
    return errors


# ------------------------------------------------------------------------------------------ boundaries (§4.6)

DBE_MAX_DIST = 10.0           # px: iBims-1 truncation of the chamfer distances
DBE_CANNY = (0.15, 0.3)       # iBims-1 Canny hysteresis thresholds on the min-max normalised depth
DBE_SIGMA = float(np.sqrt(2))
EDGE_JUMP = 0.25              # GT depth edge: 4-neighbours whose depths differ by more than a factor 1.25
BAND_PX = 3                   # semantic band: pixels within 3 px (Euclidean) of a semantic boundary pixel


def canny_depth_edges(depth: np.ndarray) -> np.ndarray:
    """iBims-1 edges of a depth map [H, W] (m; 0 = invalid): bool [H, W].

    The depth is min-max normalised to [0, 1] over its valid pixels (zeros become NaN, so no edge is found
    next to them), then ``skimage.feature.canny`` with sigma sqrt(2) and hysteresis thresholds 0.15 / 0.3.
    A constant map has no edge.
    """
    from skimage.feature import canny

    depth = _as_2d("depth", depth).astype(np.float64)
    norm = np.where(depth == 0, np.nan, depth)
    if np.all(np.isnan(norm)):
        return np.zeros(depth.shape, dtype=bool)
    norm = norm - np.nanmin(norm)
    top = np.nanmax(norm)
    norm = norm / top if top > 0 else norm
    return canny(norm, sigma=DBE_SIGMA, low_threshold=DBE_CANNY[0], high_threshold=DBE_CANNY[1])


def depth_boundary_error(edges_gt: np.ndarray, pred_depth: np.ndarray) -> tuple[float, float]:
    """Depth boundary error (accuracy, completeness) in pixels, the iBims-1 definition (Koch et al. 2018).

    edges_gt: bool [H, W] GT depth edges; pred_depth: [H, W] (m; 0 = invalid), edges by
    :func:`canny_depth_edges`. With D_gt, D_pred the Euclidean distance to the nearest GT / predicted edge:
    accuracy = mean D_gt over the predicted edges with D_gt < 10 px; completeness = (Σ_pred min(D_gt, 10) +
    Σ_gt min(D_pred, 10)) / (n_pred + n_gt). No predicted edge within 10 px of a GT edge: (10, 10). No GT
    edge: (nan, nan).
    """
    from scipy import ndimage

    edges_gt = _as_2d("edges_gt", edges_gt).astype(bool)
    if not edges_gt.any():
        return float("nan"), float("nan")
    edges_pred = canny_depth_edges(pred_depth)
    if edges_pred.shape != edges_gt.shape:
        raise ValueError(f"pred_depth {edges_pred.shape} and edges_gt {edges_gt.shape} must have the same shape")
    dist_gt = ndimage.distance_transform_edt(~edges_gt)
    near = edges_pred & (dist_gt < DBE_MAX_DIST)
    if not near.any():
        return DBE_MAX_DIST, DBE_MAX_DIST
    accuracy = float(dist_gt[near].mean())
    dist_pred = ndimage.distance_transform_edt(~edges_pred)
    total = (np.minimum(dist_gt[edges_pred], DBE_MAX_DIST).sum()
             + np.minimum(dist_pred[edges_gt], DBE_MAX_DIST).sum())
    return accuracy, float(total / (edges_pred.sum() + edges_gt.sum()))


def gt_depth_edges(gt_depth: np.ndarray, max_depth: float = 80.0, jump: float = EDGE_JUMP) -> np.ndarray:
    """GT depth edges of a dense depth map [H, W] (m; 0 = no surface, e.g. sky): bool [H, W].

    Both pixels of every 4-neighbour pair whose depths differ by more than a factor ``1 + jump`` (0 counts as
    infinitely far) while the nearer of the two is closer than ``max_depth``: occlusion contours, two pixels
    wide like the Canny edges they are compared with. A plane's depth changes smoothly, so the road gives
    no edge as long as the factor between neighbouring rows stays below 1.25 (true up to 80 m on the
    generated 448x136 rig; docs/design.md §4.6).
    """
    depth = _as_2d("gt_depth", gt_depth).astype(np.float64)
    far = np.where(depth > 0, depth, np.inf)
    edges = np.zeros(depth.shape, dtype=bool)
    for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                 ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):
        near, other = np.minimum(far[a], far[b]), np.maximum(far[a], far[b])
        step = (near < max_depth) & (other > (1.0 + jump) * near)
        edges[a] |= step
        edges[b] |= step
    return edges


def semantic_band(labels: np.ndarray, width: int = BAND_PX) -> np.ndarray:
    """Pixels within ``width`` px (Euclidean) of a semantic boundary: bool [H, W] of a label map [H, W].

    A boundary pixel has a 4-neighbour of another label (both sides are boundary pixels); no boundary: all
    False.
    """
    from scipy import ndimage

    labels = _as_2d("labels", labels)
    boundary = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        differ = np.diff(labels, axis=axis) != 0
        lead = [slice(None)] * 2
        lead[axis] = slice(None, -1)
        trail = [slice(None)] * 2
        trail[axis] = slice(1, None)
        boundary[tuple(lead)] |= differ
        boundary[tuple(trail)] |= differ
    if not boundary.any():
        return boundary
    return ndimage.distance_transform_edt(~boundary) <= width


def _abs_rel_a1(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """abs_rel and a1 of :func:`compute_depth_errors`; (nan, nan) for an empty set of pixels."""
    if gt.size == 0:
        return float("nan"), float("nan")
    errors = compute_depth_errors(gt, pred)
    return errors["abs_rel"], errors["a1"]


def class_key(label: int, names: Sequence[str] = ()) -> str:
    """Result key of a semantic id: ``names[label]`` with spaces as underscores (``traffic_light``), or
    ``class_<id>`` when ``names`` does not cover it."""
    return names[label].replace(" ", "_") if 0 <= label < len(names) else f"class_{label}"


def band_errors(gt_depth: np.ndarray, pred_depth: np.ndarray, labels: np.ndarray, width: int = BAND_PX,
                min_depth: float = 1e-3, max_depth: float = 80.0, names: Sequence[str] = ()) -> dict:
    """abs_rel and a1 near semantic boundaries, away from them and per class, on dense GT (one image).

    gt_depth, pred_depth: [H, W] m (gt 0 = no surface); labels: [H, W] int semantic ids. Valid pixels:
    min_depth < gt < max_depth. The prediction is median-scaled over all valid pixels (ratio =
    median(gt) / median(pred), as the Eigen protocol) and clamped to [min_depth, max_depth]. Returns
    ``band_abs_rel``, ``band_a1`` (valid pixels of :func:`semantic_band`), ``off_band_abs_rel``,
    ``off_band_a1`` (the other valid pixels; nan when a set is empty) and ``per_class``:
    ``{class_key(label, names): {"abs_rel", "a1"}}`` for every label with valid pixels.
    """
    gt = _as_2d("gt_depth", gt_depth).astype(np.float64)
    pred = _as_2d("pred_depth", pred_depth).astype(np.float64)
    labels = _as_2d("labels", labels)
    if not gt.shape == pred.shape == labels.shape:
        raise ValueError(f"gt_depth {gt.shape}, pred_depth {pred.shape} and labels {labels.shape} differ in shape")
    valid, pred = _median_scaled(gt, pred, min_depth, max_depth)
    return _band_errors(gt, pred, valid, labels, width, names)


def _median_scaled(gt: np.ndarray, pred: np.ndarray, min_depth: float, max_depth: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(valid pixels min_depth < gt < max_depth, the prediction median-scaled over them and clamped)."""
    valid = (gt > min_depth) & (gt < max_depth)
    if not valid.any():
        raise ValueError(f"gt_depth [{gt.shape[0]}, {gt.shape[1]}] has no pixel in ({min_depth}, {max_depth}) m")
    ratio = float(np.median(gt[valid]) / np.median(pred[valid]))
    return valid, np.clip(pred * ratio, min_depth, max_depth)


def _band_errors(gt: np.ndarray, pred: np.ndarray, valid: np.ndarray, labels: np.ndarray, width: int,
                 names: Sequence[str]) -> dict:
    """:func:`band_errors` of an already scaled prediction."""
    band = semantic_band(labels, width)
    out = {}
    for name, mask in (("band", valid & band), ("off_band", valid & ~band)):
        out[f"{name}_abs_rel"], out[f"{name}_a1"] = _abs_rel_a1(gt[mask], pred[mask])
    out["per_class"] = {}
    for label in np.unique(labels[valid]):
        mask = valid & (labels == label)
        abs_rel, a1 = _abs_rel_a1(gt[mask], pred[mask])
        out["per_class"][class_key(int(label), names)] = {"abs_rel": abs_rel, "a1": a1}
    return out


def evaluate_boundaries(pred_disp: np.ndarray, gt_depth: np.ndarray, labels: np.ndarray,
                        min_depth: float = 1e-3, max_depth: float = 80.0,
                        disp_range: tuple[float, float] = (0.1, 100.0), names: Sequence[str] = ()) -> dict:
    """Boundary metrics of one image on dense GT (design.md §4.6).

    pred_disp: [h, w] sigmoid at network size; gt_depth: dense [H, W] m (0 = no surface); labels: [H, W]
    semantic ids of the same frame (``names``: their class names). The disparity is resized to (W, H) and
    inverted exactly as in :func:`evaluate_depth`; returns :func:`band_errors` plus ``dbe_acc``, ``dbe_comp``
    (:func:`depth_boundary_error` of the median-scaled prediction clamped to [min_depth, max_depth] against
    :func:`gt_depth_edges`).
    """
    gt = _as_2d("gt_depth", gt_depth).astype(np.float64)
    labels = _as_2d("labels", labels)
    if labels.shape != gt.shape:
        raise ValueError(f"gt_depth {gt.shape} and labels {labels.shape} differ in shape")
    valid, scaled = _median_scaled(gt, depth_at(pred_disp, gt.shape, disp_range), min_depth, max_depth)
    out = _band_errors(gt, scaled, valid, labels, BAND_PX, names)
    out["dbe_acc"], out["dbe_comp"] = depth_boundary_error(gt_depth_edges(gt, max_depth), scaled)
    return out


BOUNDARY_KEYS = ("dbe_acc", "dbe_comp", "band_abs_rel", "band_a1", "off_band_abs_rel", "off_band_a1")


def summarise_boundaries(per_image: Sequence[dict]) -> dict:
    """Mean over images of each :data:`BOUNDARY_KEYS` figure and of each class's abs_rel / a1, skipping the
    images where it is undefined (nan: no GT edge, no pixel in the band or of the class); a figure no image
    defines is left out (so every value is a number). ``dbe_images``: images with a GT edge."""
    if not per_image:
        raise ValueError("no per-image boundary results to summarise (empty test set?)")

    def mean(values) -> float | None:
        values = np.array([v for v in values if v is not None], dtype=np.float64)
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else None

    out = {k: mean(r[k] for r in per_image) for k in BOUNDARY_KEYS}
    out = {k: v for k, v in out.items() if v is not None}
    out["dbe_images"] = int(sum(not np.isnan(r["dbe_acc"]) for r in per_image))
    classes = sorted({c for r in per_image for c in r["per_class"]})
    per_class = {}
    for c in classes:
        row = {k: mean(r["per_class"].get(c, {}).get(k) for r in per_image) for k in ("abs_rel", "a1")}
        if all(v is not None for v in row.values()):
            per_class[c] = row
    out["per_class"] = per_class
    return out


# ------------------------------------------------------------------------------------------ ragged GT I/O

def save_gt_depths(path: str | Path, depths: Sequence[np.ndarray], frames: Sequence[str] | None = None,
                   listed: int | None = None, protocol: str | None = None) -> None:
    """Write a list of GT depth maps [H_i, W_i] (m; sizes may differ) to ``path`` (.npz), atomically.

    Layout (no object arrays, so ``np.load`` needs no ``allow_pickle``): ``values`` float32 [ΣH_i·W_i]
    (maps flattened in C order, concatenated), ``shapes`` int64 [N, 2]; with ``frames``, the split line of
    each map (``frames`` str [N]) and ``listed``, how many lines the test list had (int64 scalar); with
    ``protocol``, the protocol the maps are the GT of (``eigen`` / ``eigen_benchmark``, a str scalar).
    """
    arrays = [np.asarray(d, dtype=np.float32) for d in depths]
    for i, d in enumerate(arrays):
        if d.ndim != 2:
            raise ValueError(f"GT depth {i} must be [H, W], got shape {d.shape}")
    if frames is not None and len(frames) != len(arrays):
        raise ValueError(f"{len(frames)} frame names for {len(arrays)} GT depth maps")
    shapes = np.array([d.shape for d in arrays], dtype=np.int64).reshape(-1, 2)
    values = np.concatenate([d.ravel() for d in arrays]) if arrays else np.zeros(0, np.float32)
    extra = {}
    if frames is not None:
        extra["frames"] = np.array(list(frames), dtype=str).reshape(-1)
        extra["listed"] = np.int64(len(frames) if listed is None else listed)
    if protocol is not None:
        if protocol not in (*PROTOCOLS, "photometric"):  # photometric: no depth (your videos without GT)
            raise ValueError(f"unknown evaluation protocol {protocol!r}; one of {PROTOCOLS} or photometric")
        extra["protocol"] = np.array(protocol)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz"
        np.savez_compressed(f, values=values, shapes=shapes, **extra)


def load_gt_frames(path: str | Path) -> tuple[list[str], int]:
    """The split lines of the maps in a ``save_gt_depths`` file (the test frames evaluated, in order) and the
    number of lines of the test list they came from."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no GT depth file; run the export_gt stage (dvc repro export_gt)")
    with np.load(path, allow_pickle=False) as data:
        if "frames" not in data.files:
            raise ValueError(f"{path}: no list of the frames it holds (written by an older export_gt); re-run "
                             "`dvc repro -f export_gt`")
        return [str(f) for f in data["frames"]], int(data["listed"])


def load_gt_protocol(path: str | Path) -> str:
    """The protocol a ``save_gt_depths`` file holds the GT of (``eigen`` for a file that does not say)."""
    with np.load(path, allow_pickle=False) as data:
        return str(data["protocol"]) if "protocol" in data.files else "eigen"


def load_gt_depths(path: str | Path) -> list[np.ndarray]:
    """Read ``save_gt_depths`` output: list of float32 [H_i, W_i] maps, in the order written."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no GT depth file; run the evaluate stage's GT export first")
    with np.load(path, allow_pickle=False) as data:
        missing = {"values", "shapes"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a ragged GT file (missing {sorted(missing)}; has {data.files}); "
                             "re-export it with psdif.evaluation.metrics.save_gt_depths")
        values, shapes = data["values"], data["shapes"]
    sizes = shapes[:, 0] * shapes[:, 1]
    if int(sizes.sum()) != values.size:
        raise ValueError(f"{path}: shapes describe {int(sizes.sum())} values but the file holds "
                         f"{values.size}; the file is corrupt, re-export it")
    splits = np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) else []
    return [v.reshape(int(h), int(w)) for v, (h, w) in zip(splits, shapes)]


CONSTANT_SPREAD = 1e-3  # below: the network predicts one depth for every pixel (a collapsed training run)


def disparity_spread(sigmoids: Sequence[np.ndarray]) -> float:
    """Median over test images of std / mean of the predicted sigmoid disparity: about 0.2-0.5 for a network
    that sees depth, 0 for a constant prediction (the ``flat`` row, or a run whose sigmoid saturated)."""
    if not len(sigmoids):
        return float("nan")
    return float(np.median([float(np.std(s)) / max(float(np.mean(s)), 1e-12) for s in sigmoids]))
