"""Training losses (paper §3.3-3.4, design.md §2): photometric + automask + smoothness (L_base, Eqs. 14-19),
semantic cross-entropy (L_CE), boundary alignment metric loss (L_metric, Eqs. 10-13, Algorithm 1) and
their total (Eq. 20).

Pure functions of tensors returning tensors: no ``.item()``, no Python branch on tensor values, shapes
static for a given input size, so a training step that calls :func:`compute_losses` can be compiled or
captured as a CUDA graph. Photometric terms are vectorised over source frames and scales.

Decisions where the paper leaves room (also in the function docstrings):
- Eq. 19 weights the whole per-scale loss (photometric and smoothness) by 1/2^l, then averages over the
  scales, as the paper writes it (Monodepth2 weights only the smoothness term).
- Eq. 18's ``M_pixel * L_pixel`` is the Monodepth2 combined minimum: the noisy identity errors compete in
  the same minimum, so masked pixels keep their (constant, gradient-free) identity error. The noise is
  drawn once per step and shared by the scales.
- The smoothness term of scale l compares the scale-l disparity with the target image area-resized to
  that scale.
- Algorithm 1: a source frame votes "inconsistent" at a target pixel when its warped (nearest) label
  differs from S_GT(t); it abstains where the projection falls behind the camera or outside the source
  image, or where either label is void. A pixel is inconsistent when any source votes so (Algorithm 1's
  two ``if`` tests are an OR). The warp uses the scale-0 depth and the poses, detached.
- Metric loss at feature scale s (a feature pixel covers a 2^s x 2^s block of input pixels): its label is
  the input label at the block centre (nearest subsampling, ``nearest-exact``: input pixel
  (i*2^s + 2^(s-1), j*2^s + 2^(s-1))); it is an anchor (in B_t) when any pixel of its block is in B_t,
  and in B_ct when any pixel of its block is in B_t & B_c. (Nearest subsampling of the 2-pixel-wide B_t
  band would drop most boundary pixels at 1/8.) P+ / P- are the Z x Z neighbours on the feature grid
  with the same / a different label, the centre and out-of-image or void neighbours excluded; an anchor
  with an empty P+ or P- has no triplet and is not counted in |B_gt| + |B_ct|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from psdif.data.batch import FRAME_IDS
from psdif.geometry import backproject, disp_to_depth, project_to_pixels, warp
from psdif.semantics.cityscapes import VOID_LABEL

SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
AUTOMASK_NOISE = 1e-5    # std of the tie-break noise added to the identity errors (Monodepth2)
_METRIC_EPS = 1e-9       # floor of the squared feature distance (design.md §2)


# ----------------------------------------------------------------------------------------- photometric

def _box3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 mean over an already padded ``[..., H + 2, W + 2]`` map -> ``[..., H, W]``.

    Same numbers as ``avg_pool2d(x, 3, 1)``, as two separable sums of shifted slices: several times
    faster than avg_pool2d on CPU for these small kernels, and as cheap as it on GPU.
    """
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    return (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]) * (1.0 / 9.0)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM dissimilarity ``clamp((1 - SSIM) / 2, 0, 1)`` per pixel and channel (design.md §2, §7).

    x, y: ``[B, C, H, W]``. Local statistics: reflection pad 1, 3 x 3 average pooling;
    C1 = 0.01^2, C2 = 0.03^2 (images in [0, 1]). Returns ``[B, C, H, W]``.
    """
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")
    y = F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x = _box3(x)
    mu_y = _box3(y)
    var_x = _box3(x * x) - mu_x * mu_x
    var_y = _box3(y * y) - mu_y * mu_y
    cov_xy = _box3(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov_xy + SSIM_C2)
    den = (mu_x * mu_x + mu_y * mu_y + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return torch.clamp((1 - num / den) / 2, 0, 1)


def photometric_error(pred: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 15: ``pe = alpha * clamp((1 - SSIM)/2) + (1 - alpha) * |pred - target|``, channel mean.

    pred, target: ``[B, C, H, W]``. Returns ``[B, 1, H, W]``.
    """
    l1 = (pred - target).abs().mean(1, keepdim=True)
    return alpha * ssim(pred, target).mean(1, keepdim=True) + (1 - alpha) * l1


class MinReprojection(NamedTuple):
    loss: torch.Tensor       # [..., 1, H, W] per-pixel minimum error
    automask: torch.Tensor   # [..., 1, H, W] bool, True where a warped source won (Eq. 16 M_pixel)
    source: torch.Tensor     # [..., 1, H, W] int64, index 0..N-1 of the source whose error won


def min_reprojection(reprojection: torch.Tensor, identity: torch.Tensor | None = None,
                     noise: torch.Tensor | None = None) -> MinReprojection:
    """Eqs. 14 and 16: per-pixel minimum over source frames with the stationary-pixel automask.

    reprojection: ``[..., N, H, W]`` errors of the N warped sources. identity: ``[..., N, H, W]`` errors
    of the unwarped sources (broadcast against ``reprojection``, e.g. ``[B, N, H, W]`` shared by all
    scales of ``[S, B, N, H, W]``), or None to switch the automask off. ``noise`` (same shape as
    ``identity``) is added to the identity errors; None draws ``1e-5 * N(0, 1)``. Identity and warped
    errors compete in the same minimum, so the loss of an automasked pixel is its (constant) identity
    error, which passes no gradient.
    """
    n = reprojection.shape[-3]
    if identity is None:
        loss, source = reprojection.min(dim=-3, keepdim=True)
        return MinReprojection(loss, torch.ones_like(loss, dtype=torch.bool), source)
    if noise is None:
        noise = torch.randn_like(identity) * AUTOMASK_NOISE
    identity = (identity + noise).expand_as(reprojection)
    loss, winner = torch.cat([identity, reprojection], dim=-3).min(dim=-3, keepdim=True)
    return MinReprojection(loss, winner >= n, winner % n)


def smoothness(disp: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Eq. 17: edge-aware smoothness of the mean-normalised disparity ``d / mean(d)``.

    disp: ``[B, 1, h, w]``; img: ``[B, C, h, w]`` at the same size.
    Returns the scalar ``mean(|dx d*| e^{-|dx I|}) + mean(|dy d*| e^{-|dy I|})``, where ``|dx I|`` is the
    channel mean of the absolute image gradient.
    """
    d = disp / (disp.mean((2, 3), keepdim=True) + 1e-7)
    grad_dx = (d[..., :, :-1] - d[..., :, 1:]).abs()
    grad_dy = (d[..., :-1, :] - d[..., 1:, :]).abs()
    grad_ix = (img[..., :, :-1] - img[..., :, 1:]).abs().mean(1, keepdim=True)
    grad_iy = (img[..., :-1, :] - img[..., 1:, :]).abs().mean(1, keepdim=True)
    return (grad_dx * torch.exp(-grad_ix)).mean() + (grad_dy * torch.exp(-grad_iy)).mean()


def scale_weights(num_scales: int, device=None) -> torch.Tensor:
    """Eq. 19 weights ``2^-l / |Scale|`` for l = 0 .. num_scales-1 (``L_base = sum_l w_l L_single^l``)."""
    return torch.tensor([0.5 ** s / num_scales for s in range(num_scales)], device=device)


# -------------------------------------------------------------------------------------------- semantics

def cross_entropy(seg_logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = VOID_LABEL) -> torch.Tensor:
    """L_CE: mean cross-entropy over the labelled pixels (0 when none is labelled, never NaN).

    seg_logits: ``[B, K, H, W]``; labels: ``[B, H, W]`` int64 train ids, ``ignore_index`` = void.
    """
    total = F.cross_entropy(seg_logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    count = (labels != ignore_index).sum()
    return total / count.clamp(min=1)


def warp_labels_nearest(labels_src: torch.Tensor, depth: torch.Tensor, T_target_to_src: torch.Tensor,
                        K: torch.Tensor, inv_K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour view synthesis of a label map: ``S^_t(s)(p) = S_s(round(p_s))``.

    labels_src: ``[B, H, W]`` int64; depth: ``[B, 1, H, W]`` metres (target); T, K, inv_K: ``[B, 4, 4]``.
    Returns the warped labels ``[B, H, W]`` and ``in_view`` ``[B, H, W]`` bool: the projection is in front
    of the source camera and rounds (``floor(x + 0.5)``) to a pixel inside the source image.
    Out-of-view pixels hold the label of pixel (0, 0) and must be masked with ``in_view``.
    """
    b, h, w = labels_src.shape
    pix, z = project_to_pixels(backproject(depth, inv_K), K, T_target_to_src)
    u = torch.floor(pix[:, 0] + 0.5)
    v = torch.floor(pix[:, 1] + 0.5)
    in_view = (z[:, 0] > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)     # NaN -> False
    zero = torch.zeros_like(u)
    index = (torch.where(in_view, v, zero) * w + torch.where(in_view, u, zero)).long()
    warped = labels_src.reshape(b, h * w).gather(1, index)
    return warped.reshape(b, h, w), in_view.reshape(b, h, w)


def semantic_inconsistency(labels_src: Sequence[torch.Tensor], labels_t: torch.Tensor, depth: torch.Tensor,
                           T_target_to_src: Sequence[torch.Tensor], K: torch.Tensor, inv_K: torch.Tensor,
                           ignore_index: int = VOID_LABEL) -> torch.Tensor:
    """Algorithm 1 (B_c): pixels whose pseudo-label disagrees with a source frame's warped label.

    labels_src: source pseudo-labels, e.g. ``(S_{t-1}, S_{t+1})``, each ``[B, H, W]`` int64;
    T_target_to_src: the matching poses ``[B, 4, 4]``; labels_t: S_GT(t) ``[B, H, W]``;
    depth: ``[B, 1, H, W]`` predicted target depth (metres); K, inv_K: ``[B, 4, 4]`` at this size.
    A source abstains at out-of-view pixels (behind the camera or rounding outside the image) and where
    its warped label or S_GT(t) is ``ignore_index``. Returns ``[B, 1, H, W]`` bool; B_ct = B_c & B_t is
    formed by the caller (:func:`metric_loss`). No gradient flows (labels are discrete).
    """
    n = len(labels_src)
    if n != len(T_target_to_src):
        raise ValueError(f"semantic_inconsistency: {n} label maps but {len(T_target_to_src)} poses")
    b, h, w = labels_t.shape
    with torch.no_grad():
        warped, in_view = warp_labels_nearest(
            torch.cat(list(labels_src), 0), depth.detach().repeat(n, 1, 1, 1),
            torch.cat(list(T_target_to_src), 0).detach(), K.repeat(n, 1, 1), inv_K.repeat(n, 1, 1))
        target = labels_t.repeat(n, 1, 1)
        votes = in_view & (warped != ignore_index) & (target != ignore_index) & (warped != target)
        return votes.reshape(n, b, 1, h, w).any(0)


# ------------------------------------------------------------------------------------------ metric loss

def nearest_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest subsampling of a label map ``[B, H, W]`` to ``size`` (h, w), dtype kept: output (i, j)
    takes input ``(floor((i + 0.5) H / h), floor((j + 0.5) W / w))`` (the block centre)."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(labels.dtype)


def resize_any(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Block-OR downsampling of a bool mask ``[B, H, W]`` to ``size``: True where any input pixel of the
    output pixel's block is True (adaptive max pooling)."""
    return F.adaptive_max_pool2d(mask[:, None].float(), size)[:, 0] > 0


def _feature_distance(dot: torch.Tensor, distance: str) -> torch.Tensor:
    """Distance between unit vectors from their dot product: ``sqrt(max(1e-9, 2 - 2 dot))`` (``l2``) or
    ``max(1e-9, 2 - 2 dot)`` (``squared``)."""
    sq = torch.clamp(2 - 2 * dot, min=_METRIC_EPS)
    if distance == "l2":
        return torch.sqrt(sq)
    if distance == "squared":
        return sq
    raise ValueError(f"loss.metric_distance={distance!r}: use 'l2' or 'squared'")


def metric_loss_single_scale(features: torch.Tensor, labels: torch.Tensor, boundary: torch.Tensor,
                             inconsistent: torch.Tensor, z: int, margin: float, gamma1: float, gamma2: float,
                             distance: str = "l2", ignore_index: int = VOID_LABEL) -> torch.Tensor:
    """Eqs. 10-13 on one feature map whose grid matches the labels and masks.

    features: ``[B, C, h, w]``; labels: ``[B, h, w]`` int64; boundary, inconsistent: ``[B, h, w]`` bool.
    Features are L2-normalised per pixel; for each anchor of B_t, d+ / d- = mean distance to the Z x Z
    neighbours (centre, out-of-image and void excluded) with the same / a different label; triplet
    ``max(d+ - d- + m, 0)``; ``L = (g1 sum_{B_gt} + g2 sum_{B_ct}) / (|B_gt| + |B_ct|)`` over anchors with
    non-empty P+ and P-, 0 when there is none. Vectorised over the Z^2 - 1 window offsets.
    """
    b, _, h, w = features.shape
    r = z // 2
    f = F.normalize(features.float(), dim=1)
    f_pad = F.pad(f, (r, r, r, r))
    lab_pad = F.pad(labels, (r, r, r, r), value=-1)
    sum_pos = torch.zeros(b, h, w, device=f.device)
    sum_neg = torch.zeros_like(sum_pos)
    n_pos = torch.zeros_like(sum_pos)
    n_neg = torch.zeros_like(sum_pos)
    for dy in range(z):
        for dx in range(z):
            if dy == r and dx == r:
                continue
            dist = _feature_distance((f * f_pad[:, :, dy:dy + h, dx:dx + w]).sum(1), distance)
            lab = lab_pad[:, dy:dy + h, dx:dx + w]
            usable = (lab >= 0) & (lab != ignore_index)
            pos = (usable & (lab == labels)).float()
            neg = (usable & (lab != labels)).float()
            sum_pos = sum_pos + dist * pos
            sum_neg = sum_neg + dist * neg
            n_pos = n_pos + pos
            n_neg = n_neg + neg
    d_pos = sum_pos / n_pos.clamp(min=1)
    d_neg = sum_neg / n_neg.clamp(min=1)
    triplet = torch.relu(d_pos - d_neg + margin)
    anchor = boundary & (labels != ignore_index) & (n_pos > 0) & (n_neg > 0)
    b_gt = (anchor & ~inconsistent).float()
    b_ct = (anchor & inconsistent).float()
    numerator = gamma1 * (triplet * b_gt).sum() + gamma2 * (triplet * b_ct).sum()
    return numerator / (b_gt.sum() + b_ct.sum()).clamp(min=1)


def metric_loss(features: Mapping[int, torch.Tensor], labels: torch.Tensor, boundary: torch.Tensor,
                inconsistent: torch.Tensor, z: int, margin: float, gamma1: float, gamma2: float,
                distance: str = "l2", ignore_index: int = VOID_LABEL) -> torch.Tensor:
    """Boundary alignment loss L_metric (Eq. 13), averaged over the given feature scales.

    features: ``{scale: [B, C, h, w]}`` depth-decoder features (any sizes); labels: S_GT(t) ``[B, H, W]``;
    boundary (B_t), inconsistent (B_c of Algorithm 1): ``[B, 1, H, W]`` bool at input size. Labels and
    masks are brought to each feature grid: labels by nearest subsampling (:func:`nearest_labels`), B_t and
    B_ct = B_t & B_c by block-OR (:func:`resize_any`); B_gt = B_t - B_ct. Returns a scalar tensor
    (0 for an empty boundary set, with finite gradients).
    """
    if not features:
        raise ValueError("metric_loss: no feature scales given (loss.metric_scales is empty)")
    inconsistent_boundary = boundary[:, 0] & inconsistent[:, 0]
    per_scale = []
    for feat in features.values():
        size = tuple(feat.shape[-2:])
        per_scale.append(metric_loss_single_scale(
            feat, nearest_labels(labels, size), resize_any(boundary[:, 0], size),
            resize_any(inconsistent_boundary, size), z, margin, gamma1, gamma2, distance, ignore_index))
    return torch.stack(per_scale).mean()


# ---------------------------------------------------------------------------------------------- total

@dataclass
class LossTerms:
    """The loss of one training step; every field is a tensor (no host sync).

    total = mu1 * base + mu2 * ce + mu3 * metric (Eq. 20); base = photometric + smoothness (Eq. 19, both
    already weighted by 2^-l / |Scale| and smoothness by lambda). ce / metric are 0 when the variant
    has no semantic branch / no metric loss. automask_fraction: share of (pixel, scale) pairs where a
    warped source won. n_boundary_gt / n_boundary_ct: |B_gt| / |B_ct| at input size over the batch
    (0 without the metric loss).
    """

    total: torch.Tensor
    base: torch.Tensor
    photometric: torch.Tensor
    smoothness: torch.Tensor
    ce: torch.Tensor
    metric: torch.Tensor
    automask_fraction: torch.Tensor
    n_boundary_gt: torch.Tensor
    n_boundary_ct: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.__dict__)


def _base_loss(disparities: Sequence[torch.Tensor], images: torch.Tensor, poses: Mapping[int, torch.Tensor],
               K: torch.Tensor, inv_K: torch.Tensor, loss_cfg, min_depth: float, max_depth: float):
    """Eqs. 14-19 vectorised over scales and sources. images: ``[B, F, 3, H, W]`` in FRAME_IDS order.

    Returns (photometric, smoothness, automask_fraction, depth at scale 0 ``[B, 1, H, W]``).
    """
    b, _, _, h, w = images.shape
    src_ids = [FRAME_IDS.index(i) for i in FRAME_IDS if i != 0]
    target = images[:, FRAME_IDS.index(0)]                                   # [B, 3, H, W]
    sources = images[:, src_ids].transpose(0, 1)                             # [N, B, 3, H, W]
    n, s = sources.shape[0], len(disparities)
    poses_t = torch.stack([poses[FRAME_IDS[i]] for i in src_ids], 0).float()  # [N, B, 4, 4]

    disp_full = torch.stack([F.interpolate(d.float(), size=(h, w), mode="bilinear", align_corners=False)
                             for d in disparities], 0)                       # [S, B, 1, H, W]
    depth = disp_to_depth(disp_full, min_depth, max_depth)[1]

    def merge(x):  # [S|1, N|1, B, ...] -> [S*N*B, ...] (scale-major, then source, then batch)
        return x.expand(s, n, *x.shape[2:]).reshape(s * n * b, *x.shape[3:])

    warped = warp(merge(sources[None]), merge(depth[:, None]), merge(poses_t[None]),
                  merge(K.float()[None, None]), merge(inv_K.float()[None, None]))
    target_flat = merge(target[None, None])
    reproj = photometric_error(warped, target_flat, loss_cfg.alpha).reshape(s, n, b, h, w).transpose(1, 2)
    identity = None
    if loss_cfg.automask:
        identity = photometric_error(sources.reshape(n * b, 3, h, w), target.repeat(n, 1, 1, 1),
                                     loss_cfg.alpha).reshape(n, b, h, w).transpose(0, 1)
    best = min_reprojection(reproj, identity)                                # [S, B, 1, H, W]

    weights = scale_weights(s, device=images.device)
    photometric = (weights * best.loss.mean((1, 2, 3, 4))).sum()
    smooth = torch.stack([smoothness(d.float(), F.interpolate(target, size=d.shape[-2:], mode="area"))
                          for d in disparities])
    return (photometric, loss_cfg.smoothness * (weights * smooth).sum(),
            best.automask.float().mean(), depth[0])


def compute_losses(out, batch, poses: Mapping[int, torch.Tensor], loss_cfg, variant, z: int,
                   min_depth: float, max_depth: float) -> LossTerms:
    """Eq. 20: ``L = mu1 L_base + mu2 L_CE + mu3 L_metric`` for one batch.

    out: model output with ``disparities`` (list of ``[B, 1, H/2^s, W/2^s]`` sigmoid, s = 0..3),
    ``seg_logits`` (``[B, 19, H, W]`` or None) and ``features`` (``{1: [B, C, H/2, W/2], 2: .., 3: ..}``);
    batch: :class:`psdif.data.batch.Batch` (losses use ``images``, never ``images_aug``);
    poses: ``{-1: T, 1: T}`` target-to-source ``[B, 4, 4]``; loss_cfg: :class:`psdif.config.LossConfig`;
    variant: :class:`psdif.variants.Variant` (``seg`` enables L_CE, ``metric_loss`` L_metric);
    z: boundary.z; min_depth, max_depth: model.min_depth / max_depth. Runs in fp32 (autocast off).
    """
    images = batch.images
    with torch.autocast(device_type=images.device.type, enabled=False):
        photometric, smooth, automask_fraction, depth0 = _base_loss(
            out.disparities, images.float(), poses, batch.K, batch.inv_K, loss_cfg, min_depth, max_depth)
        base = photometric + smooth
        zero = torch.zeros((), device=images.device)
        labels_t = batch.labels[:, FRAME_IDS.index(0)]
        ce = zero
        if variant.seg:
            if out.seg_logits is None:
                raise ValueError(f"variant {variant.name!r} has seg=True but the model returned no seg_logits")
            ce = cross_entropy(out.seg_logits, labels_t)
        metric, n_gt, n_ct = zero, zero.long(), zero.long()
        if variant.metric_loss:
            missing = [s for s in loss_cfg.metric_scales if s not in out.features]
            if missing:
                raise KeyError(f"loss.metric_scales={loss_cfg.metric_scales}: the model returned no depth "
                               f"features at scale(s) {missing} (has {sorted(out.features)})")
            src = [i for i in FRAME_IDS if i != 0]
            inconsistent = semantic_inconsistency(
                [batch.labels[:, FRAME_IDS.index(i)] for i in src], labels_t, depth0,
                [poses[i] for i in src], batch.K.float(), batch.inv_K.float())
            metric = metric_loss({s: out.features[s] for s in loss_cfg.metric_scales}, labels_t,
                                 batch.boundary, inconsistent, z, loss_cfg.margin, loss_cfg.gamma1,
                                 loss_cfg.gamma2, loss_cfg.metric_distance)
            n_gt = (batch.boundary & ~inconsistent).sum()
            n_ct = (batch.boundary & inconsistent).sum()
        total = loss_cfg.mu1 * base + loss_cfg.mu2 * ce + loss_cfg.mu3 * metric
    return LossTerms(total=total, base=base, photometric=photometric, smoothness=smooth, ce=ce,
                     metric=metric, automask_fraction=automask_fraction, n_boundary_gt=n_gt,
                     n_boundary_ct=n_ct)
