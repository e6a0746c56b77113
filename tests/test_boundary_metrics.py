"""Boundary metrics on dense ground truth (design.md §4.6): the iBims-1 depth boundary error, the GT depth
edges, the semantic band and the per-class errors, against hand computation and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from psdif.semantics.cityscapes import CITYSCAPES_CLASSES

from psdif.evaluation.metrics import (band_errors, canny_depth_edges, depth_boundary_error, evaluate_boundaries,
                                      gt_depth_edges, semantic_band, summarise_boundaries)

H, W = 30, 60


def step(col: int, near: float = 5.0, far: float = 20.0) -> np.ndarray:
    """Depth [H, W]: ``near`` left of column ``col``, ``far`` from it on."""
    depth = np.full((H, W), near)
    depth[:, col:] = far
    return depth


def edge_columns(*cols: int) -> np.ndarray:
    """What Canny marks for vertical steps: both columns around each step, rows 1..H-2 (the border rows are
    never edges)."""
    edges = np.zeros((H, W), dtype=bool)
    for c in cols:
        edges[1:-1, [c - 1, c]] = True
    return edges


# ------------------------------------------------------------------------------------------ DBE

def test_canny_marks_both_columns_of_a_step():
    assert np.array_equal(canny_depth_edges(step(20)), edge_columns(20))
    assert np.array_equal(canny_depth_edges(step(20, near=30.0, far=2.0)), edge_columns(20))


@pytest.mark.parametrize("k, acc, comp", [(0, 0.0, 0.0), (1, 0.5, 0.5), (3, 2.5, 2.5), (9, 8.5, 8.5),
                                          (10, 9.0, 9.5)])
def test_dbe_of_a_step_shifted_by_k_pixels(k, acc, comp):
    """GT edges = columns 19, 20; predicted edges = columns 19+k, 20+k (28 rows each). By hand: the two
    predicted columns lie k-1 and k from the nearest GT column, and each GT column k and k-1 from the nearest
    predicted one, so accuracy = completeness = k - 1/2. At k = 10 the column at 10 px leaves the accuracy
    (D < 10 only): accuracy 9; completeness (9 + 10 + 10 + 9) / 4 = 9.5."""
    got = depth_boundary_error(edge_columns(20), step(20 + k))
    assert got == pytest.approx((acc, comp))


def test_dbe_one_of_two_gt_edges_predicted_lowers_completeness_by_its_share():
    """Two GT steps (columns 14/15 and 44/45), the prediction has only the first: accuracy stays 0, and the
    56 missed GT pixels each add the truncation 10 to the sum over 56 + 112 edge pixels: 10 / 3."""
    gt = edge_columns(15, 45)
    both = step(15)
    both[:, 45:] = 5.0
    assert depth_boundary_error(gt, both) == pytest.approx((0.0, 0.0))
    assert depth_boundary_error(gt, step(15)) == pytest.approx((0.0, 10 * 56 / (56 + 112)))


def test_dbe_without_gt_edge_is_nan_and_flat_or_far_prediction_is_ten():
    acc, comp = depth_boundary_error(np.zeros((H, W), bool), step(20))
    assert math.isnan(acc) and math.isnan(comp)
    assert depth_boundary_error(edge_columns(20), np.full((H, W), 7.0)) == (10.0, 10.0)
    assert depth_boundary_error(edge_columns(20), step(40)) == (10.0, 10.0)   # its edges lie 19 px away


def test_dbe_treats_zero_depth_as_invalid():
    """A block of zeros: if 0 were a depth it would be the minimum and give edges around the block; as
    invalid (NaN) it gives none, and the step is found as before."""
    depth = step(20)
    depth[5:12, 40:50] = 0.0
    edges = canny_depth_edges(depth)
    assert not edges[:, 30:].any()
    assert np.array_equal(edges[:, :30], edge_columns(20)[:, :30])


def test_dbe_equals_brute_force_chamfer_on_random_maps():
    """Accuracy and completeness recomputed from the Canny edges with pairwise Euclidean distances (no
    distance transform)."""
    rng = np.random.default_rng(3)
    pred = ndimage.gaussian_filter(rng.random((40, 50)), 3) + 1.0
    gt = np.zeros((40, 50), dtype=bool)
    gt[rng.integers(0, 40, 60), rng.integers(0, 50, 60)] = True
    est = canny_depth_edges(pred)
    assert est.sum() > 20
    pe, ge = np.argwhere(est), np.argwhere(gt)
    dist = np.sqrt(((pe[:, None, :] - ge[None, :, :]) ** 2).sum(-1))   # [n_pred, n_gt]
    d_pred_to_gt, d_gt_to_pred = dist.min(1), dist.min(0)
    near = d_pred_to_gt < 10
    acc = d_pred_to_gt[near].mean()
    comp = (np.minimum(d_pred_to_gt, 10).sum() + np.minimum(d_gt_to_pred, 10).sum()) / (len(pe) + len(ge))
    assert depth_boundary_error(gt, pred) == pytest.approx((acc, comp))


# ------------------------------------------------------------------------------------------ GT edges

def test_gt_depth_edges_by_hand():
    """Row 0 sky (0), a 10 m box in a 20 m wall, a 24 m patch (factor 1.2: no edge), a 100 m / 200 m block
    (no edge between them nor with the sky: both beyond max_depth; an edge with the wall below)."""
    depth = np.full((8, 12), 20.0)
    depth[0] = 0.0
    depth[3:5, 2:5] = 10.0
    depth[5:7, 8:11] = 24.0
    depth[1:3, 9] = 100.0
    depth[1:3, 10:] = 200.0
    want = np.zeros((8, 12), dtype=bool)
    want[0:2, :9] = True                       # sky against the wall (20 m), both sides; not against 100 m
    want[1:3, 8] = want[1:3, 9] = True         # the wall (20 m) left of 100 m
    want[2:4, 9:] = True                       # 100 m / 200 m above the wall
    want[3:5, 2:5] = True                      # the box (only 2 rows, 3 columns: all of it on its contour)
    want[2, 2:5] = want[5, 2:5] = True         # the wall pixels above and below the box
    want[3:5, 1] = want[3:5, 5] = True         # ... left and right of it
    got = gt_depth_edges(depth, max_depth=80.0)
    assert np.array_equal(got, want), np.argwhere(got != want)


def test_gt_depth_edges_leave_a_ground_plane_alone():
    """A road seen by the generated rig (fy = 1.92·136, camera 1.65 m): depth fy·1.65 / (row − cy) below the
    horizon; within 80 m neighbouring rows differ by less than a factor 1.25, so no edge."""
    h, w, fy = 136, 448, 1.92 * 136
    rows = np.arange(h, dtype=np.float64)[:, None] - h / 2
    depth = np.where(rows > 0, fy * 1.65 / np.maximum(rows, 1e-9), 0.0) * np.ones((1, w))
    edges = gt_depth_edges(depth, max_depth=80.0)
    assert (depth[h // 2 + 6] < 80.0).all() and not edges.any()
    depth[100:110, 200:230] = 3.0      # a kerb-high box on it: edges again
    assert gt_depth_edges(depth, max_depth=80.0).any()


# ------------------------------------------------------------------------------------------ band

def test_semantic_band_by_hand():
    labels = np.zeros((4, 12), dtype=np.uint8)
    labels[:, 5:] = 1
    band = semantic_band(labels, width=2)        # boundary pixels: columns 4 and 5
    want = np.zeros((4, 12), dtype=bool)
    want[:, 2:8] = True
    assert np.array_equal(band, want)
    assert not semantic_band(np.full((4, 12), 3), width=2).any()


def test_band_errors_by_hand():
    """Labels road (0) left of column 5, sidewalk (1) from it on; band (width 2) = columns 2..7. GT 10 m; the
    prediction is 2x the truth, and 2x12.5 m inside the band; an extra row of invalid GT (0) carries wild
    predictions. Median scaling (ratio 1/2) restores 10 m off the band: band abs_rel 0.25 and a1 0 (1.25 is
    not below 1.25); off band 0 and 1. Per class: road 3 of 5 columns in the band, sidewalk 3 of 15."""
    labels = np.zeros((5, 20), dtype=np.uint8)
    labels[:, 5:] = 1
    gt = np.full((5, 20), 10.0)
    pred = np.full((5, 20), 20.0)
    pred[:, 2:8] = 25.0
    gt[4], pred[4] = 0.0, 1000.0
    out = band_errors(gt, pred, labels, width=2, names=("road", "side walk"))
    assert out["band_abs_rel"] == pytest.approx(0.25) and out["band_a1"] == 0.0
    assert out["off_band_abs_rel"] == pytest.approx(0.0) and out["off_band_a1"] == 1.0
    assert out["per_class"] == {"road": pytest.approx({"abs_rel": 0.25 * 3 / 5, "a1": 2 / 5}),
                                "side_walk": pytest.approx({"abs_rel": 0.25 * 3 / 15, "a1": 12 / 15})}
    assert set(band_errors(gt, pred, labels, width=2)["per_class"]) == {"class_0", "class_1"}


def test_band_errors_no_valid_gt_names_the_problem():
    with pytest.raises(ValueError, match="no pixel in"):
        band_errors(np.zeros((3, 3)), np.ones((3, 3)), np.zeros((3, 3), np.uint8))


def test_summarise_boundaries_skips_undefined_images():
    nan = float("nan")
    per_image = [
        {"dbe_acc": 1.0, "dbe_comp": 2.0, "band_abs_rel": 0.2, "band_a1": 0.5, "off_band_abs_rel": 0.1,
         "off_band_a1": 0.9, "per_class": {"road": {"abs_rel": 0.1, "a1": 1.0}}},
        {"dbe_acc": nan, "dbe_comp": nan, "band_abs_rel": 0.4, "band_a1": 0.7, "off_band_abs_rel": 0.3,
         "off_band_a1": 0.5, "per_class": {"road": {"abs_rel": 0.3, "a1": 0.0},
                                           "car": {"abs_rel": 0.5, "a1": 0.25}}},
    ]
    out = summarise_boundaries(per_image)
    assert out["dbe_acc"] == 1.0 and out["dbe_comp"] == 2.0 and out["dbe_images"] == 1
    assert out["band_abs_rel"] == pytest.approx(0.3) and out["off_band_a1"] == pytest.approx(0.7)
    assert out["per_class"] == {"car": {"abs_rel": 0.5, "a1": 0.25},
                                "road": pytest.approx({"abs_rel": 0.2, "a1": 0.5})}
    only_nan = summarise_boundaries([{**per_image[1], "dbe_acc": nan, "dbe_comp": nan}])
    assert "dbe_acc" not in only_nan and only_nan["dbe_images"] == 0


def test_evaluate_boundaries_of_the_true_depth():
    """A sigmoid that encodes the GT itself (sky predicted at 100 m, clamped to 80): every band / class error
    is 0 up to the float32 sigmoid, and the Canny edges of the prediction fall on the GT edges."""
    from tests.test_metrics import sigmoid_for_depth

    gt = np.full((H, W), 20.0)
    gt[:4] = 0.0
    gt[12:24, 10:25] = 6.0
    labels = np.full((H, W), 2, dtype=np.uint8)      # building
    labels[:4] = 10                                   # sky
    labels[12:24, 10:25] = 13                         # car
    sigmoid = sigmoid_for_depth(np.where(gt > 0, gt, 100.0)).astype(np.float32)
    out = evaluate_boundaries(sigmoid, gt, labels, names=CITYSCAPES_CLASSES)
    assert out["band_abs_rel"] < 1e-5 and out["off_band_abs_rel"] < 1e-5 and out["band_a1"] == 1.0
    assert set(out["per_class"]) == {"building", "car"}
    assert out["dbe_acc"] == pytest.approx(0.0, abs=0.1) and out["dbe_comp"] < 0.5
