"""The training batch: one small dataclass that moves to the device in one call."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

FRAME_IDS = (0, -1, 1)  # temporal offsets of the frames stacked in a batch, target first


@dataclass
class Batch:
    """A batch of (t, t-1, t+1) triplets at network resolution (a dataset item is one without the B axis).

    images:     [B, 3, 3, H, W] float in [0, 1]; frames in FRAME_IDS order; originals (losses use these)
    images_aug: [B, 3, 3, H, W] colour-jittered copies (the networks' input); equal to images without jitter
    K:          [B, 4, 4] intrinsics at network resolution (scale 0), pixels
    inv_K:      [B, 4, 4] inverse of K
    labels:     [B, 3, H, W] int64 pseudo-labels of the three frames (255 = void/unknown)
    boundary:   [B, 1, H, W] bool, B_t of the target frame (design.md §2), nearest-resized to network size
    """

    images: torch.Tensor
    images_aug: torch.Tensor
    K: torch.Tensor
    inv_K: torch.Tensor
    labels: torch.Tensor
    boundary: torch.Tensor

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self)})

    def pin_memory(self) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    @classmethod
    def stack(cls, items: Sequence["Batch"]) -> "Batch":
        """Stack dataset items (no batch axis) along a new first axis."""
        return cls(**{f.name: torch.stack([getattr(it, f.name) for it in items]) for f in fields(cls)})

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]
