"""MSFAN: the multi-stage feature attention encoder (paper §3.2.2, Figure 2, Eqs. 1-2).

The backbone is timm's ``HighResolutionNet`` built without any head, so its module names (and state-dict
keys) are exactly those of timm's ``hrnet_w18`` minus the classifier head. MSFAN runs its modules in turn
(stem ``conv1 ... act1`` | ``conv2 ... act2, layer1`` | ``transition1, stage2`` | ``transition2, stage3`` |
``transition3, stage4``) and keeps every stage's branch outputs. Level l lives at 1/2^(l+1) of the input:

    f_0 = CA(stem)                                         (Eq. 2, l = 0; 1/2)
    f_l = CA(concat(f_l^l, ..., f_l^4))   l = 1..4         (Eq. 2; stage s contributes its branch at level l)

where stage 1 (``layer1``) has one branch at 1/4 and stage s (2..4) has branches at levels 1..s.

Output channels per level (``MSFAN.channels``):

| size       | f_0 | f_1                   | f_2          | f_3         | f_4 |
|------------|-----|-----------------------|--------------|-------------|-----|
| w18        | 64  | 256 + 3*18 = 310      | 3*36 = 108   | 2*72 = 144  | 144 |
| w18_small  | 64  | 256 + 3*18 = 310      | 108          | 144         | 144 |
| tiny       | 16  | 64 + 3*8 = 88         | 3*16 = 48    | 2*32 = 64   | 64  |

``w18_small`` is timm's ``hrnet_w18_small_v2`` configuration (same widths as W18, fewer blocks/modules);
``tiny`` is this project's CPU configuration (:data:`TINY_CFG`, timm's cfg format).
"""

from __future__ import annotations

import copy

import torch
from timm.models.hrnet import HighResolutionNet, cfg_cls
from torch import nn

from psdif.models.layers import CoordinateAttention

# Reduced HRNet for a 2-core CPU (timm cfg format): one block per branch, one module per stage.
TINY_CFG = dict(
    stem_width=16,
    stage1=dict(num_modules=1, num_branches=1, block_type="BOTTLENECK", num_blocks=(1,),
                num_channels=(16,), fuse_method="SUM"),
    stage2=dict(num_modules=1, num_branches=2, block_type="BASIC", num_blocks=(1, 1),
                num_channels=(8, 16), fuse_method="SUM"),
    stage3=dict(num_modules=1, num_branches=3, block_type="BASIC", num_blocks=(1, 1, 1),
                num_channels=(8, 16, 32), fuse_method="SUM"),
    stage4=dict(num_modules=1, num_branches=4, block_type="BASIC", num_blocks=(1, 1, 1, 1),
                num_channels=(8, 16, 32, 64), fuse_method="SUM"),
)

HRNET_CFGS = {
    "w18": cfg_cls["hrnet_w18"],
    "w18_small": cfg_cls["hrnet_w18_small_v2"],
    "tiny": TINY_CFG,
}


def _expansion(block_type: str) -> int:
    return 4 if block_type == "BOTTLENECK" else 1


def level_channels(cfg: dict) -> list[int]:
    """Channels of f_0..f_4 for an HRNet cfg (concatenation of every stage's branch at each level)."""
    s1 = cfg["stage1"]
    chans = [cfg["stem_width"], s1["num_channels"][0] * _expansion(s1["block_type"]), 0, 0, 0]
    for name in ("stage2", "stage3", "stage4"):
        st = cfg[name]
        for branch, c in enumerate(st["num_channels"]):
            chans[branch + 1] += c * _expansion(st["block_type"])
    return chans


def build_hrnet_backbone(size: str) -> HighResolutionNet:
    """timm ``HighResolutionNet`` without head (no incre/downsamp/final/classifier modules)."""
    if size not in HRNET_CFGS:
        raise ValueError(f"model.msfan_size={size!r} is not one of {sorted(HRNET_CFGS)}")
    return HighResolutionNet(copy.deepcopy(HRNET_CFGS[size]), head="none", num_classes=0)


class MSFAN(nn.Module):
    """Multi-stage feature attention network. forward(x: [B, 3, H, W] ImageNet-normalised, H, W multiples of 32)
    -> [f_0 .. f_4], f_l: [B, channels[l], H / 2^(l+1), W / 2^(l+1)] (Eq. 2)."""

    def __init__(self, size: str = "w18"):
        super().__init__()
        self.size = size
        self.backbone = build_hrnet_backbone(size)
        self.channels = level_channels(HRNET_CFGS[size])
        self.attention = nn.ModuleList(CoordinateAttention(c) for c in self.channels)

    @staticmethod
    def _transition(transition: nn.ModuleList, prev: list[torch.Tensor]) -> list[torch.Tensor]:
        """timm's transition rule: identity keeps branch i, a conv maps branch i (or the last branch, new ones)."""
        out = []
        for i, t in enumerate(transition):
            if isinstance(t, nn.Identity):
                out.append(prev[i])
            else:
                out.append(t(prev[i] if i < len(prev) else prev[-1]))
        return out

    def stage_outputs(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Branch outputs of every stage: [[stem], [layer1], stage2 (2), stage3 (3), stage4 (4)];
        branch b of stage s is at level b + 1 (1/2^(b+2)), the stem at level 0 (1/2)."""
        b = self.backbone
        stem = b.act1(b.bn1(b.conv1(x)))
        y1 = b.layer1(b.act2(b.bn2(b.conv2(stem))))
        y2 = b.stage2(self._transition(b.transition1, [y1]))
        y3 = b.stage3(self._transition(b.transition2, y2))
        y4 = b.stage4(self._transition(b.transition3, y3))
        return [[stem], [y1], list(y2), list(y3), list(y4)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = self.stage_outputs(x)
        per_level: list[list[torch.Tensor]] = [[] for _ in range(5)]
        per_level[0].append(stages[0][0])
        for outputs in stages[1:]:
            for branch, y in enumerate(outputs):
                per_level[branch + 1].append(y)
        return [ca(torch.cat(ys, dim=1)) for ca, ys in zip(self.attention, per_level)]

