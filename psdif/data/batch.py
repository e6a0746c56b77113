"""The training batch, in two forms that each move to the device in one call.

:class:`PackedBatch` is what the data loader delivers: uint8 images and labels in the layout they were read
in, plus each item's drawn colour-jitter factors; 4x fewer bytes than the float batch to collate, pin and
copy. :meth:`PackedBatch.unpack`, run on the device inside the training step, gives the :class:`Batch` the
networks and losses read: float images, the jittered copy (``psdif.data.augment.jitter_batch``), int64 labels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch

FRAME_IDS = (0, -1, 1)  # temporal offsets of the frames stacked in a batch, target first


class _Tensors:
    """Moving, pinning and stacking shared by both forms: every field is a tensor."""

    def to(self, device, non_blocking: bool = True):
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self)})

    def pin_memory(self):
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    @classmethod
    def stack(cls, items: Sequence):
        """Stack dataset items (no batch axis) along a new first axis."""
        return cls(**{f.name: torch.stack([getattr(it, f.name) for it in items]) for f in fields(cls)})

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]


@dataclass
class Batch(_Tensors):
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



@dataclass
class PackedBatch(_Tensors):
    """A batch as the loader delivers it (a dataset item is one without the B axis); ``unpack()`` -> Batch.

    images:       [B, 3, H, W, 3] uint8 RGB, frames in FRAME_IDS order, as decoded (channels last),
                  already flipped where the item's flip was drawn
    jitter:       [B, 4] float64 brightness, contrast, saturation, hue factors (``NO_JITTER`` where none)
    jitter_order: [B, 4] int64 order of the four operations (``psdif.data.augment``)
    jittered:     [B] bool, the item's jitter was drawn (p = 0.5)
    K, inv_K:     [B, 4, 4] float32 intrinsics at network resolution and their inverse
    labels:       [B, 3, H, W] uint8 pseudo-labels of the three frames (255 = void/unknown)
    boundary:     [B, 1, H, W] bool, B_t of the target frame
    """

    images: torch.Tensor
    jitter: torch.Tensor
    jitter_order: torch.Tensor
    jittered: torch.Tensor
    K: torch.Tensor
    inv_K: torch.Tensor
    labels: torch.Tensor
    boundary: torch.Tensor

    def unpack(self) -> Batch:
        """The float :class:`Batch` on the same device: images / 255 (as the CPU loader computed them), the
        colour-jittered copy of every item with its own factors, labels as int64. Batched, no host sync on
        CUDA; part of the compiled region when ``train.compile`` is on."""
        from psdif.data.augment import jitter_batch

        images = self.images.permute(0, 1, 4, 2, 3).contiguous().float().div_(255.0)  # bytes reordered, then float
        images_aug = jitter_batch(images, self.jitter, self.jitter_order, self.jittered)
        return Batch(images=images, images_aug=images_aug, K=self.K, inv_K=self.inv_K, labels=self.labels.long(),
                     boundary=self.boundary)
