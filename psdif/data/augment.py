"""Training augmentation (docs/design.md §4.2): the per-item draw, and the colour jitter in two equal forms.

- :func:`sample_augmentation` draws one item's augmentation from ``numpy.random.default_rng([seed, epoch,
  index])``: the same item of the same epoch is augmented the same way in any worker, on any rank, before
  and after a resume. Flip and jitter each happen with p = 0.5; the jitter factors are brightness,
  contrast, saturation in [0.8, 1.2] and hue in [-0.1, 0.1], applied in a random order.
- :func:`color_jitter` is the reference: torchvision's functional ops, one item ``[F, 3, H, W]``.
- :func:`jitter_batch` is what training runs: the same jitter on a whole batch on the device, every item
  with its own factors and order, inside the training step (``psdif.data.batch.PackedBatch.unpack``). On CUDA it
  is batched with fixed shapes (no host sync, graph-capturable): brightness, contrast and saturation are
  all blends ``f x + (1 - f) ref``, so three blend steps run what precedes each item's hue, one hue
  rotation runs for all, and three blend steps what follows it (an item's step outside its part gets the
  factor 1, an exact no-op). On the CPU it loops over the jittered items
  (half the work). Both follow torchvision's formulas operation by operation; tests/test_augment.py
  bounds the difference from :func:`color_jitter` on random images, factors and all 24 orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

JITTER_RANGE = 0.2   # brightness, contrast, saturation factors in [1 - 0.2, 1 + 0.2]   (docs/design.md §4.2)
HUE_RANGE = 0.1      # hue shift in [-0.1, 0.1] of a full turn
AUG_P = 0.5          # probability of the jitter and (independently) of the flip
NO_JITTER = (1.0, 1.0, 1.0, 0.0)  # the identity factors (brightness, contrast, saturation, hue)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # the operations, as numbered in ``Augmentation.order``
GREY_WEIGHTS = (0.2989, 0.587, 0.114)             # torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class Augmentation:
    """One item's augmentation: flip, and jitter factors (None = no jitter) applied in ``order``."""

    flip: bool
    jitter: Optional[tuple[float, float, float, float]]  # brightness, contrast, saturation, hue
    order: tuple[int, ...]                                 # permutation of the four jitter operations


NO_AUGMENTATION = Augmentation(flip=False, jitter=None, order=(0, 1, 2, 3))


def sample_augmentation(seed: int, epoch: int, index: int) -> Augmentation:
    """Draw one item's augmentation from ``default_rng([seed, epoch, index])`` (docs/design.md §4.2).

    The same number of values is drawn whatever the outcome, so the stream never shifts.
    """
    rng = np.random.default_rng([seed, epoch, index])
    u_flip, u_jitter = rng.random(2)
    b, c, s = rng.uniform(1 - JITTER_RANGE, 1 + JITTER_RANGE, size=3)
    h = rng.uniform(-HUE_RANGE, HUE_RANGE)
    order = tuple(int(i) for i in rng.permutation(4))
    jitter = (float(b), float(c), float(s), float(h)) if u_jitter < AUG_P else None
    return Augmentation(flip=bool(u_flip < AUG_P), jitter=jitter, order=order)


# ------------------------------------------------------------------------------------------ the reference

def color_jitter(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Apply one jitter to every frame: images [F, 3, H, W] float in [0, 1] -> same shape, in [0, 1].

    torchvision's ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation`` / ``adjust_hue`` in
    ``aug.order``, then a clamp to [0, 1]; a copy of ``images`` when ``aug.jitter`` is None.
    """
    from torchvision.transforms import functional as TF

    if aug.jitter is None:
        return images.clone()
    b, c, s, h = aug.jitter
    ops = (lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
           lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h))
    out = images
    for i in aug.order:
        out = ops[i](out)
    return out.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------ on the device

def _grey(x: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] -> [..., 1, H, W], torchvision's weights and operation order."""
    r, g, b = x.unbind(-3)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(-3)


def _blend(x: torch.Tensor, ref: torch.Tensor, ratio: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``(ratio x + (1 - ratio) ref)`` clamped to [0, 1]; ``rest`` = 1 - ratio,
    computed in float64 from the float64 factor as torchvision does with a Python float."""
    return (ratio * x + rest * ref).clamp(0.0, 1.0)


def _hue_shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_hue`` with a per-item shift: RGB -> HSV, h + shift mod 1, HSV -> RGB.

    x: [..., 3, H, W] float in [0, 1]; shift broadcastable to [..., H, W]. Same formulas in the same order
    as torchvision's ``_rgb2hsv`` / ``_hsv2rgb`` (the final one-hot einsum becomes a selection: equal).
    """
    r, g, b = x.unbind(-3)
    maxc, minc = x.max(-3).values, x.min(-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_divisor, (maxc - g) / cr_divisor, (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = (h + shift) % 1.0
    v = maxc
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)

    def pick(*values):  # value k where i == k (torchvision: a one-hot weighted sum, exact as well)
        out = values[5]
        for k in range(4, -1, -1):
            out = torch.where(i == k, values[k], out)
        return out

    return torch.stack((pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)), -3)


def _per_item(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, ..., 1] broadcastable against ``like`` [N, ...]."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)))


def jitter_batch(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor,
                 jittered: torch.Tensor) -> torch.Tensor:
    """The colour jitter of every item of a batch, on the batch's device.

    images: [N, F, 3, H, W] float in [0, 1]; factors: [N, 4] float64 (brightness, contrast, saturation, hue);
    order: [N, 4] int64 permutations of (BRIGHTNESS, CONTRAST, SATURATION, HUE); jittered: [N] bool (False:
    the item is returned unchanged). Returns a new [N, F, 3, H, W] tensor in [0, 1]; item n equals
    ``color_jitter(images[n], Augmentation(False, factors[n], order[n]))`` up to the reduction order of the
    contrast mean.
    """
    if images.device.type == "cpu":
        return _jitter_loop(images, factors, order, jittered)
    return _jitter_select(images, factors, order, jittered)


def _jitter_loop(images, factors, order, jittered) -> torch.Tensor:
    """CPU: each jittered item on its own with scalar factors (the other half of the batch costs nothing)."""
    out = images.clone()
    for n in torch.nonzero(jittered).flatten().tolist():
        x = images[n]
        for op in order[n].tolist():
            f = float(factors[n, op])
            if op == HUE:
                x = _hue_shift(x, torch.tensor(f, dtype=x.dtype))
            else:
                ref = torch.zeros((), dtype=x.dtype) if op == BRIGHTNESS else _grey(x)
                if op == CONTRAST:
                    ref = ref.mean((-3, -2, -1), keepdim=True)
                x = _blend(x, ref, torch.tensor(f, dtype=x.dtype), torch.tensor(1.0 - f, dtype=x.dtype))
        out[n] = x.clamp(0.0, 1.0)
    return out


def _jitter_select(images, factors, order, jittered) -> torch.Tensor:
    """Any device, fixed shapes, one hue rotation per item: every order is (blends before the hue, the hue,
    blends after it). Three blend steps run the operations that come before each item's hue (an item whose
    operation at that step comes after its hue gets the identity factor 1, an exact no-op), then the hue
    rotation of every item, then three blend steps for the operations after it."""
    dtype = images.dtype
    ratio, rest = factors.to(dtype), (1.0 - factors).to(dtype)   # 1 - f in float64, as torchvision
    hue_at = (order == HUE).long().argmax(1)                      # [N] position of the hue in each order
    one, zero = torch.ones((), dtype=dtype, device=images.device), torch.zeros((), dtype=dtype, device=images.device)

    def blend_step(x: torch.Tensor, k: int, active: torch.Tensor) -> torch.Tensor:
        op = order[:, k]
        blend_op = op.clamp(max=SATURATION)[:, None]               # the hue's slot reads any factor: inactive
        f = torch.where(active, ratio.gather(1, blend_op).squeeze(1), one)
        f_rest = torch.where(active, rest.gather(1, blend_op).squeeze(1), zero)
        op = _per_item(op, x)
        grey = _grey(x)
        ref = torch.where(op == BRIGHTNESS, zero, torch.where(op == CONTRAST, grey.mean((-3, -2, -1), keepdim=True),
                                                              grey))
        return _blend(x, ref, _per_item(f, x), _per_item(f_rest, x))

    x = images
    for k in range(3):
        x = blend_step(x, k, k < hue_at)
    x = _hue_shift(x, _per_item(ratio[:, HUE], x).squeeze(-3))
    for k in range(1, 4):
        x = blend_step(x, k, k > hue_at)
    return torch.where(_per_item(jittered, x), x.clamp(0.0, 1.0), images)
