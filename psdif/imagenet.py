"""ImageNet statistics: the input normalisation of every encoder here (HRNet, ResNet-18, DeepLabv3+ all learnt
on ImageNet-normalised RGB). One leaf module that the networks (``psdif.models.layers.ImageNormalize``) and the
pseudo-labeller (``psdif.semantics.labels``) both import: importing it pulls in no network code, so the label
stages' code dependencies stay free of ``psdif/models`` (docs/design.md, "Layers")."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> ``(x - mean) / std`` per channel, on ``x``'s device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
