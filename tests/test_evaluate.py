"""Batched prediction and the reference rows, checked against hand-derived numbers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from torch import nn

from psdif.evaluation.evaluate import ConstantDisparity, predict_sigmoids
from psdif.evaluation.metrics import evaluate_depth


class _LeftRightRamp(nn.Module):
    """Disparity = the image's red channel (so a flipped input gives a flipped map)."""

    def forward_depth(self, x):
        return x[:, :1]


def test_predict_sigmoids_resizes_batches_and_keeps_order():
    imgs = [np.full((20, 40, 3), v, np.uint8) for v in (0, 51, 102, 153, 204)]
    out = predict_sigmoids(_LeftRightRamp(), imgs, 8, 16, batch_size=2)
    assert len(out) == 5 and out[0].shape == (8, 16)
    np.testing.assert_allclose([o.mean() for o in out], [0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)


def test_post_process_of_a_symmetric_net_is_the_identity():
    rng = np.random.default_rng(0)
    img = (rng.random((8, 16, 3)) * 255).astype(np.uint8)
    plain = predict_sigmoids(_LeftRightRamp(), [img], 8, 16)[0]
    pp = predict_sigmoids(_LeftRightRamp(), [img], 8, 16, post_process=True)[0]
    np.testing.assert_allclose(pp, plain, atol=1e-6)  # the net is flip-equivariant, so blending changes nothing


def test_flat_reference_row_matches_hand_computation():
    """Constant depth scaled to median(gt): GT with two depth values gives a closed-form abs_rel."""
    h, w = 375, 1242
    gt = np.zeros((h, w), np.float32)
    gt[200:300, 100:1100:2] = 10.0
    gt[200:300, 101:1100:2] = 20.0
    sig = predict_sigmoids(ConstantDisparity(), [np.zeros((h, w, 3), np.uint8)], 32, 96)[0]
    r = evaluate_depth(sig, gt)
    # equal counts of 10 and 20: median = 15 -> |15-10|/10 and |15-20|/20 average to (0.5 + 0.25) / 2
    assert r["abs_rel"] == np.float64(0.375) or abs(r["abs_rel"] - 0.375) < 1e-6
    assert abs(r["a1"] - 0.0) < 1e-9  # 15/10 = 1.5 and 20/15 = 1.33 both exceed 1.25
    assert abs(r["a2"] - 1.0) < 1e-9


def test_disparity_spread_separates_a_constant_prediction():
    """std / mean of the sigmoid, median over images: 0 for the flat row and a saturated sigmoid, the hand value
    for a two-level map, far above the collapse threshold for any map with depth in it."""
    from psdif.evaluation.evaluate import CONSTANT_SPREAD, disparity_spread

    flat = ConstantDisparity()
    sig = predict_sigmoids(flat, [np.zeros((20, 40, 3), np.uint8)] * 3, 32, 64, 2, False)
    assert disparity_spread(sig) == 0.0
    saturated = [np.full((8, 16), 1.0, np.float32) - 1e-7 * np.random.default_rng(0).random((8, 16))]
    assert disparity_spread(saturated) < CONSTANT_SPREAD
    two_level = np.concatenate([np.full((4, 16), 0.2), np.full((4, 16), 0.6)]).astype(np.float32)  # mean .4, std .2
    maps = [two_level, two_level * 0 + 0.5, two_level]   # spreads 0.5, 0, 0.5 -> median 0.5
    assert abs(disparity_spread(maps) - 0.5) < 1e-6


def test_dense_gt_is_read_from_the_generators_layout_and_a_missing_file_is_named(tmp_path):
    """<raw_root>/synthetic_gt/<drive>/{depth,semantic}_0<cam>/<frame>.png: depth uint16 m x 256, labels
    uint8; a right-camera frame reads the _03 folders; a missing label file is an error naming it."""
    import cv2

    from psdif.data import kitti
    from psdif.evaluation.evaluate import evaluate_boundary_set, load_dense_gt

    folder = tmp_path / "synthetic_gt" / "2030_01_01_drive_0006_sync"
    depth = np.full((6, 8), 10.0)
    depth[:, 4:] = 40.0
    labels = np.zeros((6, 8), np.uint8)
    labels[:, 4:] = 2
    for sub, image in (("depth_03", np.round(depth * 256).astype(np.uint16)), ("semantic_03", labels)):
        (folder / sub).mkdir(parents=True)
        cv2.imwrite(str(folder / sub / "0000000007.png"), image)
    ref = kitti.FrameRef("2030_01_01/2030_01_01_drive_0006_sync", 7, "r")
    [(got_depth, got_labels)] = load_dense_gt(tmp_path, [ref])
    assert np.array_equal(got_depth, depth) and np.array_equal(got_labels, labels)
    cfg = SimpleNamespace(min_depth=1e-3, max_depth=80.0)
    sigmoid = np.full((6, 8), 0.5, np.float32)          # flat prediction: no edge, every error known
    out = evaluate_boundary_set([sigmoid], [(got_depth, got_labels)], cfg, (0.1, 100.0))
    # median scaling of a flat map gives the median GT (the median of 10 and 40: 25 m) everywhere
    assert out["dbe_acc"] == 10.0 and out["per_class"]["road"]["abs_rel"] == pytest.approx(1.5)
    assert out["per_class"]["building"]["abs_rel"] == pytest.approx(15 / 40)
    (folder / "semantic_03" / "0000000007.png").unlink()
    with pytest.raises(ValueError, match="semantic_03/0000000007.png: missing"):
        load_dense_gt(tmp_path, [ref])
