"""What every depth net returns (one small dataclass, so the trainer and the losses never look inside a model)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DepthOutput:
    """What a depth net returns.

    disparities: 4 sigmoid maps, scale s = 0..3 at 1/2^s of the input: [B, 1, H / 2^s, W / 2^s] in (0, 1).
    seg_logits:  [B, num_classes, H, W] semantic logits (None without the semantic decoder).
    features:    depth-decoder features for the metric loss, scale s = 1, 2, 3 -> [B, C_s, H / 2^s, W / 2^s]
                 (PSDIFM: FF_0, FF_1, FF_2 = F_1, F_2, F_3 of Eq. 7; baseline: its decoder's F_1..F_3).
    """

    disparities: list[torch.Tensor]
    seg_logits: torch.Tensor | None
    features: dict[int, torch.Tensor]
