"""psdif.losses against brute-force and hand-computed references (design.md §2)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psdif.data.batch import Batch
from psdif.config import default_params
from psdif.geometry import disp_to_depth, transformation_from_parameters, warp
from psdif.losses import (compute_losses, cross_entropy, metric_loss, metric_loss_single_scale,
                          min_reprojection, photometric_error, scale_weights, semantic_inconsistency,
                          smoothness, ssim)
from psdif.variants import get_variant


def make_K(batch: int, height: int, width: int) -> torch.Tensor:
    K = torch.tensor([[0.58 * width, 0, 0.5 * width, 0], [0, 1.92 * height, 0.5 * height, 0],
                      [0, 0, 1, 0], [0, 0, 0, 1]])
    return K.expand(batch, 4, 4).clone()


def translation_pose(batch: int, tx: float) -> torch.Tensor:
    T = torch.eye(4).repeat(batch, 1, 1)
    T[:, 0, 3] = tx
    return T


# ------------------------------------------------------------------------------------------ photometric

def ssim_bruteforce(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-window SSIM dissimilarity, one pixel at a time (float64)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    yp = np.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    out = np.zeros_like(x)
    b, c, h, w = x.shape
    for i, j, r, s in itertools.product(range(b), range(c), range(h), range(w)):
        wx, wy = xp[i, j, r:r + 3, s:s + 3].ravel(), yp[i, j, r:r + 3, s:s + 3].ravel()
        mx, my = wx.mean(), wy.mean()
        vx, vy = ((wx - mx) ** 2).mean(), ((wy - my) ** 2).mean()
        cov = ((wx - mx) * (wy - my)).mean()
        val = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        out[i, j, r, s] = np.clip((1 - val) / 2, 0, 1)
    return out


def test_ssim_matches_bruteforce_windows():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(2, 3, 5, 7, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ref = ssim_bruteforce(x.numpy(), y.numpy())
    np.testing.assert_allclose(ssim(x, y).numpy(), ref, atol=1e-10)
    assert ssim(x, x).abs().max() < 1e-10


def test_photometric_error_mixes_ssim_and_l1():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 4, 6, generator=gen, dtype=torch.float64)
    y = torch.rand(1, 3, 4, 6, generator=gen, dtype=torch.float64)
    pe = photometric_error(x, y, 0.85)
    ref = 0.85 * ssim_bruteforce(x.numpy(), y.numpy()).mean(1) + 0.15 * (x - y).abs().numpy().mean(1)
    assert pe.shape == (1, 1, 4, 6)
    np.testing.assert_allclose(pe[:, 0].numpy(), ref, atol=1e-10)


def test_min_reprojection_hand_case():
    # 2 sources on a 1 x 3 image
    reproj = torch.tensor([[[[0.5, 0.2, 0.9]], [[0.4, 0.6, 0.8]]]])      # [1, 2, 1, 3]
    identity = torch.tensor([[[[0.1, 0.3, 0.85]], [[0.9, 0.9, 0.95]]]])
    zero = torch.zeros_like(identity)
    res = min_reprojection(reproj, identity, noise=zero)
    torch.testing.assert_close(res.loss, torch.tensor([[[[0.1, 0.2, 0.8]]]]))
    assert res.automask.tolist() == [[[[False, True, True]]]]   # pixel 0: the unwarped source 0 is better
    assert res.source.tolist() == [[[[0, 0, 1]]]]
    # identity tie broken by the noise: a positive nudge lets the warped source win
    tie = min_reprojection(reproj, reproj.clone(), noise=torch.full_like(reproj, 1e-5))
    assert tie.automask.all()
    # default noise: 1e-5 N(0, 1) changes the loss by far less than 1e-3
    torch.testing.assert_close(min_reprojection(reproj, identity).loss, res.loss, atol=1e-3, rtol=0)
    # no automask: plain minimum over the sources
    plain = min_reprojection(reproj)
    torch.testing.assert_close(plain.loss, torch.tensor([[[[0.4, 0.2, 0.8]]]]))
    assert plain.automask.all() and plain.source.tolist() == [[[[1, 0, 1]]]]
    # identity [B, N, H, W] broadcasts over a leading scale dimension
    stacked = min_reprojection(torch.stack([reproj, reproj + 1]), identity, noise=zero)
    torch.testing.assert_close(stacked.loss[1], torch.tensor([[[[0.1, 0.3, 0.85]]]]))


def test_smoothness_3x3_by_hand():
    disp = torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0], [2.0, 2.0, 4.0]])[None, None]
    img = torch.zeros(1, 3, 3, 3)
    img[:, :, :, 2] = 0.6            # vertical image edge between columns 1 and 2 (all channels)
    img[:, 0, 2, :] += 0.3           # channel 0 brighter on the last row
    mean = 18.0 / 9.0
    d = disp[0, 0].numpy() / mean
    i = img[0].numpy()
    sx = sum(abs(d[r, c] - d[r, c + 1]) * np.exp(-np.abs(i[:, r, c] - i[:, r, c + 1]).mean())
             for r in range(3) for c in range(2)) / 6
    sy = sum(abs(d[r, c] - d[r + 1, c]) * np.exp(-np.abs(i[:, r, c] - i[:, r + 1, c]).mean())
             for r in range(2) for c in range(3)) / 6
    assert smoothness(disp, img).item() == pytest.approx(sx + sy, rel=1e-5)
    # mean-normalised: invariant to the disparity scale
    assert smoothness(5 * disp, img).item() == pytest.approx(sx + sy, rel=1e-5)


def test_scale_weights_eq19():
    torch.testing.assert_close(scale_weights(4), torch.tensor([1, 0.5, 0.25, 0.125]) / 4)


# --------------------------------------------------------------------------------------------- semantics

def test_cross_entropy_ignores_void_and_never_nan():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 19, 4, 5, generator=gen, requires_grad=True)
    labels = torch.randint(0, 19, (2, 4, 5), generator=gen)
    labels[0, 0] = 255
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels, ignore_index=255))
    void = torch.full_like(labels, 255)
    loss = cross_entropy(logits, void)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def test_semantic_inconsistency_identity_pose_equal_labels_is_all_false():
    b, h, w = 2, 6, 10
    labels = torch.randint(0, 5, (b, h, w), generator=torch.Generator().manual_seed(3))
    K = make_K(b, h, w)
    depth = 1 + 30 * torch.rand(b, 1, h, w)
    eye = torch.eye(4).expand(b, 4, 4)
    out = semantic_inconsistency([labels, labels], labels, depth, [eye, eye], K, torch.linalg.inv(K))
    assert out.shape == (b, 1, h, w) and out.dtype == torch.bool and not out.any()


def test_semantic_inconsistency_under_known_translation():
    """Plane at 10 m, source camera 2 px of disparity to the right: u_src = u_t + 2."""
    b, h, w, depth_m = 1, 4, 12, 10.0
    K = make_K(b, h, w)
    T = translation_pose(b, 2.0 * depth_m / K[0, 0, 0].item())
    inv_K = torch.linalg.inv(K)
    depth = torch.full((b, 1, h, w), depth_m)
    target = torch.zeros(b, h, w, dtype=torch.long)
    target[..., 6:] = 1                                      # label edge between columns 5 and 6
    # a source that moved consistently (its edge 2 px to the right) agrees everywhere it can be seen
    moved = torch.zeros_like(target)
    moved[..., 8:] = 1
    assert not semantic_inconsistency([moved], target, depth, [T], K, inv_K).any()
    # a source that did not move: S_src(u + 2) != S_t(u) exactly at u = 4, 5
    inc = semantic_inconsistency([target.clone()], target, depth, [T], K, inv_K)
    expected = torch.zeros(b, 1, h, w, dtype=torch.bool)
    expected[..., 4:6] = True
    assert torch.equal(inc, expected)
    # all-different source labels: every in-view pixel is inconsistent; the last 2 columns are out of
    # view (u + 2 > w - 1) and abstain
    other = torch.full_like(target, 7)
    inc = semantic_inconsistency([other], target, depth, [T], K, inv_K)
    expected = torch.zeros(b, 1, h, w, dtype=torch.bool)
    expected[..., : w - 2] = True
    assert torch.equal(inc, expected)
    # Algorithm 1 is an OR over the sources; void labels abstain
    eye = torch.eye(4).expand(b, 4, 4)
    inc = semantic_inconsistency([moved, target], target, depth, [T, eye], K, inv_K)
    assert not inc.any()
    inc = semantic_inconsistency([moved, other], target, depth, [T, eye], K, inv_K)
    assert inc.all()
    void_target = target.clone()
    void_target[:, 0] = 255
    inc = semantic_inconsistency([other], void_target, depth, [T], K, inv_K)
    assert not inc[:, 0, 0].any() and inc[:, 0, 1:, : w - 2].all()


# ------------------------------------------------------------------------------------------- metric loss

def metric_bruteforce(feat: np.ndarray, labels: np.ndarray, boundary: np.ndarray, inconsistent: np.ndarray,
                      z: int, m: float, g1: float, g2: float, distance: str) -> float:
    """design.md §2 read literally, one anchor and one neighbour at a time (float64)."""
    f = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    b, _, h, w = f.shape
    r = z // 2
    sums, counts = {"gt": 0.0, "ct": 0.0}, {"gt": 0, "ct": 0}
    for n, y, x in itertools.product(range(b), range(h), range(w)):
        if not boundary[n, y, x] or labels[n, y, x] == 255:
            continue
        pos, neg = [], []
        for yy, xx in itertools.product(range(y - r, y + r + 1), range(x - r, x + r + 1)):
            if (yy, xx) == (y, x) or not (0 <= yy < h and 0 <= xx < w) or labels[n, yy, xx] == 255:
                continue
            sq = max(1e-9, 2 - 2 * float(f[n, :, y, x] @ f[n, :, yy, xx]))
            dist = np.sqrt(sq) if distance == "l2" else sq
            (pos if labels[n, yy, xx] == labels[n, y, x] else neg).append(dist)
        if not pos or not neg:
            continue
        key = "ct" if inconsistent[n, y, x] else "gt"
        sums[key] += max(np.mean(pos) - np.mean(neg) + m, 0.0)
        counts[key] += 1
    total = counts["gt"] + counts["ct"]
    return 0.0 if total == 0 else (g1 * sums["gt"] + g2 * sums["ct"]) / total


def random_metric_case(seed: int, b=2, c=4, h=7, w=9, classes=3):
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(b, c, h, w, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (b, h, w), generator=gen)
    labels[0, 0, :3] = 255
    boundary = torch.rand(b, h, w, generator=gen) < 0.6
    inconsistent = torch.rand(b, h, w, generator=gen) < 0.4
    return feat, labels, boundary, inconsistent


@pytest.mark.parametrize("z,m,g1,g2,distance", [(5, 0.3, 1.0, 2.0, "l2"), (3, 0.3, 1.0, 2.0, "squared"),
                                                (3, 1.5, 0.5, 3.0, "l2"), (5, 0.0, 2.0, 1.0, "squared")])
def test_metric_loss_single_scale_matches_bruteforce(z, m, g1, g2, distance):
    feat, labels, boundary, inconsistent = random_metric_case(4 + z)
    got = metric_loss_single_scale(feat, labels, boundary, inconsistent, z, m, g1, g2, distance)
    ref = metric_bruteforce(feat.numpy(), labels.numpy(), boundary.numpy(), inconsistent.numpy(),
                            z, m, g1, g2, distance)
    assert ref > 0
    assert got.item() == pytest.approx(ref, rel=1e-6)


def test_metric_loss_multiscale_brings_labels_and_masks_to_each_scale():
    """Features at 1/2 and 1/4: labels from input pixel (2^s i + 2^(s-1), ...), B_t and B_t & B_c any-of-block;
    the scales are averaged."""
    gen = torch.Generator().manual_seed(5)
    b, h, w = 2, 16, 24
    labels = torch.randint(0, 3, (b, h, w), generator=gen)
    boundary = torch.rand(b, 1, h, w, generator=gen) < 0.15
    inconsistent = torch.rand(b, 1, h, w, generator=gen) < 0.5
    feats = {1: torch.randn(b, 5, h // 2, w // 2, generator=gen, dtype=torch.float64),
             2: torch.randn(b, 5, h // 4, w // 4, generator=gen, dtype=torch.float64)}
    got = metric_loss(feats, labels, boundary, inconsistent, 3, 0.3, 1.0, 2.0, "l2")

    def block_any(mask, k):
        return mask.reshape(b, h // k, k, w // k, k).any(4).any(2).numpy()

    refs = []
    for s, f in feats.items():
        k, o = 2 ** s, 2 ** (s - 1)
        refs.append(metric_bruteforce(f.numpy(), labels[:, o::k, o::k].numpy(), block_any(boundary[:, 0], k),
                                      block_any(boundary[:, 0] & inconsistent[:, 0], k), 3, 0.3, 1.0, 2.0, "l2"))
    assert got.item() == pytest.approx(np.mean(refs), rel=1e-6)


def test_metric_loss_empty_boundary_is_zero_with_finite_gradients():
    feat, labels, _, inconsistent = random_metric_case(6, h=8, w=8)
    feat = feat.float().requires_grad_()
    none = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    loss = metric_loss({1: feat}, labels, none, inconsistent[:, None], 5, 0.3, 1.0, 2.0)
    loss.backward()
    assert loss.item() == 0.0
    assert feat.grad is not None and torch.isfinite(feat.grad).all()
    # a boundary where no anchor has a negative (a single label) also gives exactly 0
    feat.grad = None
    uniform = torch.zeros_like(labels)
    loss = metric_loss({1: feat}, uniform, ~none, inconsistent[:, None], 5, 0.3, 1.0, 2.0, "squared")
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(feat.grad).all()


def test_metric_loss_identical_features_cost_the_margin():
    """All features equal: d+ = d- = sqrt(1e-9), so every anchor costs exactly m (gamma1 = gamma2 = 1)."""
    labels = torch.tensor([[0, 0, 1, 1]] * 3)[None]
    feat = torch.ones(1, 3, 3, 4, requires_grad=True)
    boundary = torch.ones(1, 1, 3, 4, dtype=torch.bool)
    loss = metric_loss({1: feat}, labels, boundary, torch.zeros_like(boundary), 3, 0.3, 1.0, 1.0)
    assert loss.item() == pytest.approx(0.3, rel=1e-6)


# ---------------------------------------------------------------------------------------- compute_losses

@dataclasses.dataclass
class FakeDepthOutput:
    disparities: list
    seg_logits: torch.Tensor | None
    features: dict


def fake_step(seed: int = 0, b: int = 2, h: int = 32, w: int = 64, disparities=None):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 3, h, w, generator=gen)
    labels = torch.zeros(b, 3, h, w, dtype=torch.long)
    labels[..., w // 2:] = 1
    labels[..., : h // 2, : w // 4] = 2
    boundary = torch.zeros(b, 1, h, w, dtype=torch.bool)
    boundary[..., w // 2 - 2: w // 2 + 2] = True
    boundary[..., h // 2 - 2: h // 2 + 2, : w // 4] = True
    K = make_K(b, h, w)
    batch = Batch(images=images, images_aug=torch.rand(b, 3, 3, h, w, generator=gen), K=K,
                  inv_K=torch.linalg.inv(K), labels=labels, boundary=boundary)
    if disparities is None:
        disparities = [torch.rand(b, 1, h >> s, w >> s, generator=gen).requires_grad_() for s in range(4)]
    out = FakeDepthOutput(
        disparities=disparities,
        seg_logits=torch.randn(b, 19, h, w, generator=gen).requires_grad_(),
        features={s: torch.randn(b, 8, h >> s, w >> s, generator=gen).requires_grad_() for s in (1, 2, 3)})
    poses = {-1: transformation_from_parameters(0.01 * torch.randn(b, 1, 3, generator=gen),
                                                0.1 * torch.randn(b, 1, 3, generator=gen), invert=True),
             1: transformation_from_parameters(0.01 * torch.randn(b, 1, 3, generator=gen),
                                               0.1 * torch.randn(b, 1, 3, generator=gen))}
    return out, batch, poses


def reference_base(out, batch, poses, cfg, min_depth, max_depth):
    """Eq. 19 scale by scale and source by source (no vectorisation), automask noise-free."""
    target, sources = batch.images[:, 0], {-1: batch.images[:, 1], 1: batch.images[:, 2]}
    h, w = target.shape[-2:]
    total = 0.0
    for s, disp in enumerate(out.disparities):
        depth = disp_to_depth(F.interpolate(disp, (h, w), mode="bilinear", align_corners=False), min_depth, max_depth)[1]
        reproj = torch.cat([photometric_error(warp(sources[i], depth, poses[i], batch.K, batch.inv_K), target, cfg.alpha)
                            for i in (-1, 1)], 1)
        errors = reproj
        if cfg.automask:
            identity = torch.cat([photometric_error(sources[i], target, cfg.alpha) for i in (-1, 1)], 1)
            errors = torch.cat([identity, reproj], 1)
        pix = errors.min(1)[0].mean()
        smooth = smoothness(disp, F.interpolate(target, size=disp.shape[-2:], mode="area"))
        total = total + (pix + cfg.smoothness * smooth) / 2 ** s
    return total / len(out.disparities)


@pytest.mark.parametrize("automask", [False, True])
def test_compute_losses_base_matches_scale_by_scale_reference(automask):
    cfg = dataclasses.replace(default_params().loss, automask=automask)
    out, batch, poses = fake_step(7)
    terms = compute_losses(out, batch, poses, cfg, get_variant("baseline"), 5, 0.1, 100.0)
    ref = reference_base(out, batch, poses, cfg, 0.1, 100.0)
    # automask on: the 1e-5 tie-break noise moves the mean by at most ~1e-4
    assert terms.base.item() == pytest.approx(ref.item(), abs=1e-4 if automask else 1e-6)
    torch.testing.assert_close(terms.base, terms.photometric + terms.smoothness)


def test_compute_losses_eq19_weights_constant_disparity():
    """Equal constant disparities at every scale: no smoothness, photometric = p0 * (1 + 1/2 + 1/4 + 1/8) / 4."""
    b, h, w = 2, 32, 64
    disps = [torch.full((b, 1, h >> s, w >> s), 0.3, requires_grad=True) for s in range(4)]
    cfg = dataclasses.replace(default_params().loss, automask=False)
    out, batch, poses = fake_step(8, b, h, w, disparities=disps)
    terms = compute_losses(out, batch, poses, cfg, get_variant("baseline"), 5, 0.1, 100.0)
    single = reference_base(FakeDepthOutput(disps[:1], None, {}), batch, poses, cfg, 0.1, 100.0)
    assert terms.smoothness.item() == pytest.approx(0.0, abs=1e-9)
    assert terms.photometric.item() == pytest.approx(single.item() * 15 / 32, rel=1e-5)


def test_compute_losses_full_gradients_and_variant_switches():
    params = default_params()
    cfg = params.loss
    out, batch, poses = fake_step(9)
    full = compute_losses(out, batch, poses, cfg, get_variant("full"), params.boundary.z, 0.1, 100.0)
    for name, value in full.as_dict().items():
        assert torch.isfinite(value.float()).all(), name
    assert full.ce > 0 and full.metric > 0
    assert full.n_boundary_gt + full.n_boundary_ct == batch.boundary.sum()
    torch.testing.assert_close(full.total, cfg.mu1 * full.base + cfg.mu2 * full.ce + cfg.mu3 * full.metric)
    full.total.backward()
    for d in out.disparities:
        assert d.grad is not None and torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0
    for f in out.features.values():
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert out.seg_logits.grad.abs().sum() > 0

    # no metric loss: the term is 0 and the features get no gradient
    out, batch, poses = fake_step(9)
    seg = compute_losses(out, batch, poses, cfg, get_variant("msfan_seg_psdifm"), 5, 0.1, 100.0)
    assert seg.metric.item() == 0 and seg.n_boundary_ct.item() == 0
    assert seg.ce.item() == pytest.approx(full.ce.item())
    torch.testing.assert_close(seg.total, cfg.mu1 * seg.base + cfg.mu2 * seg.ce)
    seg.total.backward()
    assert all(f.grad is None for f in out.features.values())

    # no semantic branch: no cross-entropy either; the model may return seg_logits=None
    out, batch, poses = fake_step(9)
    out.seg_logits = None
    base = compute_losses(out, batch, poses, cfg, get_variant("baseline"), 5, 0.1, 100.0)
    assert base.ce.item() == 0 and base.metric.item() == 0
    torch.testing.assert_close(base.total, cfg.mu1 * base.base)


def test_compute_losses_ignores_augmented_images():
    cfg = dataclasses.replace(default_params().loss, automask=False)
    out, batch, poses = fake_step(10)
    a = compute_losses(out, batch, poses, cfg, get_variant("full"), 5, 0.1, 100.0)
    batch2 = dataclasses.replace(batch, images_aug=torch.zeros_like(batch.images_aug))
    b = compute_losses(out, batch2, poses, cfg, get_variant("full"), 5, 0.1, 100.0)
    torch.testing.assert_close(a.total, b.total)


def test_compute_losses_traces_as_one_graph():
    """No .item() / value-dependent branch: dynamo captures the whole loss without a graph break."""
    torch._dynamo.reset()
    params = default_params()
    out, batch, poses = fake_step(11, b=1, h=32, w=32)
    fn = torch.compile(lambda o, bt, p: compute_losses(o, bt, p, params.loss, get_variant("full"), 3, 0.1, 100.0).total,
                       backend="eager", fullgraph=True)
    total = fn(out, batch, poses)
    assert torch.isfinite(total)
