"""psdif.data.augment: the colour jitter applied on the device (batched, every item with its own factors and
order) equals the reference of torchvision's functional ops, item by item, for all 24 orders, grey pixels,
saturated pixels and hue wrap-around; the hue rotation also against Python's colorsys, by hand."""

from __future__ import annotations

import colorsys
import itertools

import numpy as np
import pytest
import torch

from psdif.data.augment import (NO_JITTER, Augmentation, _jitter_loop, _jitter_select, color_jitter, jitter_batch,
                                sample_augmentation)

ORDERS = list(itertools.permutations(range(4)))
TOLERANCE = 1e-6  # max |difference| from the reference on the CPU (observed: 0, bit-identical)
DEVICE_TOLERANCE = 1e-5  # on a GPU: other reduction order of the contrast mean, fused multiply-adds


def random_case(n: int, seed: int, h: int = 13, w: int = 21):
    """Images [n, 3, 3, h, w] with grey, black and white patches; factors [n, 4] drawn like the training's."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 3, h, w, generator=g)
    images[:, :, :, :3, :4] = images[:, :, :1, :3, :4]   # grey pixels: hue undefined, saturation 0
    images[:, :, :, -2:, :3] = 0.0                        # black
    images[:, :, :, -2:, -3:] = 1.0                       # white (brightness > 1 saturates here)
    rng = np.random.default_rng(seed)
    factors = np.concatenate([rng.uniform(0.8, 1.2, (n, 3)), rng.uniform(-0.1, 0.1, (n, 1))], 1)
    return images, torch.tensor(factors, dtype=torch.float64)


def reference(images, factors, order, jittered):
    return torch.stack([color_jitter(images[n], Augmentation(False, tuple(factors[n].tolist()) if jittered[n]
                                                                    else None, tuple(order[n].tolist())))
                        for n in range(len(images))])


@pytest.mark.parametrize("impl", [_jitter_loop, _jitter_select], ids=["cpu-loop", "batched-select"])
def test_every_order_matches_torchvision(impl):
    """24 items, one per order of (brightness, contrast, saturation, hue), random factors; item 5 not jittered."""
    images, factors = random_case(len(ORDERS), seed=1)
    order = torch.tensor(ORDERS)
    jittered = torch.ones(len(ORDERS), dtype=torch.bool)
    jittered[5] = False
    out = impl(images, factors, order, jittered)
    ref = reference(images, factors, order, jittered)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert (out - ref).abs().max() <= TOLERANCE
    assert torch.equal(out[5], images[5])  # not jittered: untouched, exactly
    assert 0 <= out.min() and out.max() <= 1
    assert (out - images).abs().amax((1, 2, 3, 4))[jittered].min() > 1e-3  # the jitter did something


@pytest.mark.parametrize("impl", [_jitter_loop, _jitter_select], ids=["cpu-loop", "batched-select"])
def test_hue_wraps_around(impl):
    """Reds with hue just below 1 and just above 0, shifted by +-0.1 across the wrap: torchvision and colorsys."""
    hues = torch.tensor([0.97, 0.99, 0.005, 0.03])
    hsv = [(float(h), 0.8, 0.9) for h in hues]
    pixels = torch.tensor([colorsys.hsv_to_rgb(*c) for c in hsv], dtype=torch.float32)  # [4, 3]
    images = pixels.T.reshape(1, 1, 3, 1, 4).expand(2, 3, 3, 1, 4).contiguous()
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.1], [1.0, 1.0, 1.0, -0.1]], dtype=torch.float64)
    order = torch.tensor([[3, 0, 1, 2], [1, 3, 2, 0]])  # hue first / second; the other operations are identity
    out = impl(images, factors, order, torch.ones(2, dtype=torch.bool))
    assert (out - reference(images, factors, order, [True, True])).abs().max() <= TOLERANCE
    for n, shift in enumerate((0.1, -0.1)):
        for k, (h, s, v) in enumerate(hsv):
            expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)  # by hand: the hue turned, wrapped
            np.testing.assert_allclose(out[n, 0, :, 0, k].numpy(), expected, atol=2e-6)


def test_dispatch_and_training_draws():
    """jitter_batch on the CPU takes the loop; with factors drawn by sample_augmentation it matches both forms."""
    augs = [sample_augmentation(0, 3, i) for i in range(16)]
    images, _ = random_case(16, seed=2)
    factors = torch.tensor([a.jitter or NO_JITTER for a in augs], dtype=torch.float64)
    order = torch.tensor([a.order for a in augs])
    jittered = torch.tensor([a.jitter is not None for a in augs])
    assert 0 < int(jittered.sum()) < 16
    out = jitter_batch(images, factors, order, jittered)
    torch.testing.assert_close(out, _jitter_select(images, factors, order, jittered), rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(out, reference(images, factors, order, jittered), rtol=0, atol=TOLERANCE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (bench/gpu.sh checks it on a GPU)")
def test_on_the_gpu_within_tolerance():
    images, factors = random_case(len(ORDERS), seed=4, h=96, w=320)
    order, jittered = torch.tensor(ORDERS), torch.ones(len(ORDERS), dtype=torch.bool)
    out = jitter_batch(images.cuda(), factors.cuda(), order.cuda(), jittered.cuda()).cpu()
    assert (out - reference(images, factors, order, jittered)).abs().max() <= DEVICE_TOLERANCE
