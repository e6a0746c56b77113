"""Eigen protocol (design.md §4.3) against hand computation and the real KITTI GT of drive 0001 frame 5."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from psdif.evaluation.metrics import (compute_depth_errors, eigen_crop_mask, evaluate_depth, flip_post_process,
                           load_gt_depths, save_gt_depths, summarise)


def sigmoid_for_depth(depth, min_depth=0.1, max_depth=100.0):
    """Invert disp_scaled = 1/max + (1/min − 1/max)·σ for a wanted depth (m)."""
    return (1.0 / np.asarray(depth, np.float64) - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)


# ------------------------------------------------------------------------------------------ metrics

def test_compute_depth_errors_hand_values():
    gt = np.array([1.0, 2.0, 4.0, 10.0, 3.0])
    pred = np.array([1.0, 1.0, 5.0, 11.5, 5.4])
    # ratios max(gt/pred, pred/gt) = 1, 2, 1.25, 1.15, 1.8
    e = compute_depth_errors(gt, pred)
    assert e["abs_rel"] == pytest.approx((0 + 0.5 + 0.25 + 0.15 + 0.8) / 5)
    assert e["sq_rel"] == pytest.approx((0 + 1 / 2 + 1 / 4 + 2.25 / 10 + 5.76 / 3) / 5)
    assert e["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1 + 2.25 + 5.76) / 5))
    logs = [0, math.log(2) ** 2, math.log(1.25) ** 2, math.log(1.15) ** 2, math.log(1.8) ** 2]
    assert e["rmse_log"] == pytest.approx(math.sqrt(sum(logs) / 5))
    # 1.25 itself is not < 1.25; 1.8 < 1.25**3 = 1.953; 2 is above all thresholds
    assert (e["a1"], e["a2"], e["a3"]) == pytest.approx((2 / 5, 3 / 5, 4 / 5))
    assert all(isinstance(v, float) for v in e.values())


def test_compute_depth_errors_empty_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        compute_depth_errors(np.zeros(0), np.zeros(0))


def test_eigen_crop_kitti_size_by_hand():
    # 0.40810811*375 = 153.04 -> 153; 0.99189189*375 = 371.96 -> 371
    # 0.03594771*1242 = 44.65 -> 44; 0.96405229*1242 = 1197.35 -> 1197
    mask = eigen_crop_mask(375, 1242)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    assert mask.sum() == (371 - 153) * (1197 - 44)
    assert mask.dtype == bool


# ------------------------------------------------------------------------------------------ evaluate_depth

def _synthetic_gt(h=37, w=100, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(1.0, 60.0, size=(h, w))


def test_median_scaling_recovers_scaled_prediction():
    gt = _synthetic_gt()
    k = 2.5
    sigmoid = sigmoid_for_depth(gt / k).astype(np.float32)  # network size == GT size: resize is identity
    e = evaluate_depth(sigmoid, gt)
    assert e["ratio"] == pytest.approx(k, rel=1e-5)
    assert e["abs_rel"] < 1e-5 and e["rmse_log"] < 1e-5
    assert (e["a1"], e["a2"], e["a3"]) == (1.0, 1.0, 1.0)
    unscaled = evaluate_depth(sigmoid, gt, median_scaling=False)
    assert unscaled["ratio"] == 1.0
    assert unscaled["abs_rel"] == pytest.approx(1 - 1 / k, rel=1e-5)  # |g − g/k| / g


def test_clamp_at_max_depth_and_range_mask():
    h, w = 37, 100
    gt = np.full((h, w), 50.0)
    sigmoid = np.zeros((h, w), np.float32)  # σ = 0 -> disparity 1/100 -> 100 m, clamped to 80
    e = evaluate_depth(sigmoid, gt, median_scaling=False)
    assert e["abs_rel"] == pytest.approx(30 / 50)
    assert e["rmse"] == pytest.approx(30.0)
    assert e["rmse_log"] == pytest.approx(math.log(80 / 50))
    # pixels with gt <= 1e-3, gt >= 80 or outside the crop must not count
    polluted = gt.copy()
    polluted[20, 10:20] = 1e-3          # inside the crop (rows 15..35, cols 3..95), at the lower bound
    polluted[21, 10:20] = 80.0          # at the upper bound
    polluted[22, 10:20] = 0.0
    polluted[0:15, :] = 5.0             # above the crop (rows < int(0.408*37) = 15)
    polluted[:, 96:] = 5.0              # right of the crop (cols >= int(0.964*100) = 96)
    clean = gt.copy()
    clean[20:23, 10:20] = 0.0
    got = evaluate_depth(sigmoid, polluted, median_scaling=False)
    ref = evaluate_depth(sigmoid, clean, median_scaling=False)
    assert got == ref
    # just above 1e-3 counts: one pixel at 0.002 m against an 80 m prediction changes the mean
    polluted[20, 10] = 0.002
    assert evaluate_depth(sigmoid, polluted, median_scaling=False)["abs_rel"] > ref["abs_rel"]


def test_network_size_prediction_is_resized_bilinearly_as_disparity():
    gt = _synthetic_gt(h=64, w=128)
    # disparity linear in x: bilinear resizing of the disparity keeps it linear, so depth = 1/disp
    small = np.tile(np.linspace(0.2, 0.8, 32, dtype=np.float32), (16, 1))
    e = evaluate_depth(small, gt, median_scaling=False)
    disp = 0.01 + 9.99 * small.astype(np.float32)
    ref_disp = cv2.resize(disp.astype(np.float32), (128, 64), interpolation=cv2.INTER_LINEAR)
    mask = (gt > 1e-3) & (gt < 80) & eigen_crop_mask(64, 128)
    ref = compute_depth_errors(gt[mask], np.clip(1 / ref_disp[mask].astype(np.float64), 1e-3, 80))
    for key in ref:
        assert e[key] == pytest.approx(ref[key], rel=1e-6)


# ------------------------------------------------------------------------------------------ real KITTI GT

def _official_gt(kitti_mini, frame=5):
    path = (kitti_mini / "depth_groundtruth/2011_09_26_drive_0001_sync/proj_depth/groundtruth/image_02"
            / f"{frame:010d}.png")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16, path
    return raw.astype(np.float64) / 256.0


def test_real_gt_perfect_prediction(kitti_mini):
    gt = _official_gt(kitti_mini)
    assert gt.shape == (375, 1242)
    sigmoid = np.where(gt > 0, sigmoid_for_depth(np.where(gt > 0, gt, 1.0)), 0.5).astype(np.float32)
    e = evaluate_depth(sigmoid, gt)
    assert e["abs_rel"] < 1e-5 and e["sq_rel"] < 1e-5 and e["rmse"] < 1e-3 and e["rmse_log"] < 1e-5
    assert (e["a1"], e["a2"], e["a3"]) == (1.0, 1.0, 1.0)
    assert e["ratio"] == pytest.approx(1.0, abs=1e-5)


def test_real_gt_constant_disparity_by_hand(kitti_mini):
    gt = _official_gt(kitti_mini)
    sigma = 0.3
    e = evaluate_depth(np.full((192, 640), sigma, np.float32), gt)
    # by hand: crop rows 153:371, cols 44:1197 (see test above), valid 1e-3 < gt < 80
    crop = gt[153:371, 44:1197]
    g = crop[(crop > 1e-3) & (crop < 80)]
    m = np.median(g)                       # every prediction is scaled to the GT median
    const_depth = 1 / (0.01 + 9.99 * sigma)
    assert e["ratio"] == pytest.approx(m / const_depth, rel=1e-6)
    assert e["abs_rel"] == pytest.approx(np.mean(np.abs(g - m) / g), rel=1e-5)
    assert e["sq_rel"] == pytest.approx(np.mean((g - m) ** 2 / g), rel=1e-5)
    assert e["rmse"] == pytest.approx(np.sqrt(np.mean((g - m) ** 2)), rel=1e-5)
    assert e["rmse_log"] == pytest.approx(np.sqrt(np.mean(np.log(g / m) ** 2)), rel=1e-5)
    thresh = np.maximum(g / m, m / g)
    for key, power in (("a1", 1), ("a2", 2), ("a3", 3)):
        assert e[key] == pytest.approx(np.mean(thresh < 1.25 ** power), abs=2 / g.size)
    assert 0.2 < e["abs_rel"] < 1.0          # a constant is a poor predictor on a real street scene


# ------------------------------------------------------------------------------------------ post-processing

def test_flip_post_process_hand_case():
    w = 21                                   # x = k/20: l_mask = 1 - clip(k - 1, 0, 1) = [1, 1, 0, ...]
    disp = np.full((1, w), 2.0)
    disp_flipped = np.arange(w, dtype=np.float64)[None]      # flipped back: 20 - k
    out = flip_post_process(disp, disp_flipped)[0]
    assert out[0] == 20 and out[1] == 19                     # left border from the flipped pass
    assert out[19] == 2 and out[20] == 2                     # right border from the plain pass
    k = np.arange(2, 19)
    np.testing.assert_allclose(out[2:19], (2 + (20 - k)) / 2)
    # a partial ramp weight: w = 41, x = k/40, at k = 3: l_mask = 1 - (20*3/40 - 1) = 0.5, r_mask = 0
    w = 41
    disp = np.full((2, 3, w), 4.0)
    back = np.full((2, 3, w), 8.0)
    out = flip_post_process(disp, back[..., ::-1])
    assert out.shape == (2, 3, w)
    assert out[0, 0, 3] == pytest.approx(0.5 * 8 + 0.5 * 6)
    assert out[1, 2, -4] == pytest.approx(0.5 * 4 + 0.5 * 6)


def test_summarise_mean_and_ratio_spread():
    rows = [dict(abs_rel=0.1, sq_rel=1, rmse=2, rmse_log=0.2, a1=0.9, a2=0.95, a3=0.99, ratio=r)
            for r in (1.0, 2.0, 3.0)]
    rows[0]["abs_rel"] = 0.4
    s = summarise(rows)
    assert s["abs_rel"] == pytest.approx(0.2)
    assert s["ratio_median"] == 2.0
    assert s["ratio_std"] == pytest.approx(math.sqrt((0.25 + 0 + 0.25) / 3))  # std of [0.5, 1, 1.5]
    assert s["n_images"] == 3


# ------------------------------------------------------------------------------------------ ragged GT

def test_ragged_gt_roundtrip_without_pickle(tmp_path):
    rng = np.random.default_rng(1)
    maps = [rng.uniform(0, 80, (3, 4)).astype(np.float32), rng.uniform(0, 80, (5, 2)).astype(np.float32),
            np.zeros((1, 7), np.float32)]
    path = tmp_path / "gt" / "gt_depths.npz"
    save_gt_depths(path, maps)
    assert sorted(p.name for p in path.parent.iterdir()) == ["gt_depths.npz"]   # no temp file left
    with np.load(path, allow_pickle=False) as data:                             # plain arrays only
        assert data["shapes"].tolist() == [[3, 4], [5, 2], [1, 7]]
    back = load_gt_depths(path)
    assert len(back) == 3
    for a, b in zip(maps, back):
        np.testing.assert_array_equal(a, b)


def test_gt_file_holds_the_frames_it_covers(tmp_path):
    from psdif.evaluation.metrics import load_gt_frames

    path = tmp_path / "gt_depths.npz"
    lines = ["2011_09_26/2011_09_26_drive_0001_sync 5 l", "2011_09_26/2011_09_26_drive_0001_sync 25 l"]
    save_gt_depths(path, [np.ones((2, 3), np.float32), np.zeros((4, 1), np.float32)], lines, listed=697)
    assert load_gt_frames(path) == (lines, 697)
    assert [m.shape for m in load_gt_depths(path)] == [(2, 3), (4, 1)]
    with pytest.raises(ValueError, match="2 frame names for 1 GT depth maps"):
        save_gt_depths(path, [np.ones((2, 3), np.float32)], lines)
    save_gt_depths(path, [np.ones((2, 3), np.float32)])                   # an older export: no frame list
    with pytest.raises(ValueError, match=r"gt_depths.npz: no list of the frames.*export_gt"):
        load_gt_frames(path)


def test_ragged_gt_corrupt_file_names_it(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(ValueError, match="bad.npz"):
        load_gt_depths(path)


def test_flip_post_process_commutes_with_disparity_scaling():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 1, (2, 8, 30))
    scaled = flip_post_process(0.01 + 9.99 * a, 0.01 + 9.99 * b)
    np.testing.assert_allclose(scaled, 0.01 + 9.99 * flip_post_process(a, b), rtol=1e-12)
