"""The Table-3 baseline: ResNet-18 encoder + HR-Depth-style nested dense decoder with fSE fusion (no semantics).

Encoder features e_i at level i (1/2^(i+1)), i = 0..4 (layers.ResNet18Encoder). Decoder nodes X_{i,j}
(UNet++-like nesting, i + j <= 4), X_{i,0} = e_i, and for j >= 1:

    X_{i,j} = G_{i,j}(U(R_{i,j}(X_{i+1,j-1})), [X_{i,0}, ..., X_{i,j-1}])

R = F (3x3 conv + ELU) to the level's width; G = fSE on the diagonal i + j = 4 (the main decoding path),
otherwise F on the concatenation. fSE (HR-Depth's feature fusion squeeze-excitation): concatenate, weight
the channels by an SE gate (global average pool, 1x1 reduce + ReLU, 1x1 expand + sigmoid), then 1x1 conv
+ ReLU to the output width. Outputs follow Eq. 7 on the diagonal: F_0 = F(U(X_{0,4})) (full size),
F_1 = X_{0,4}, F_2 = X_{1,3}, F_3 = X_{2,2}; disparity s = sigmoid(conv(F_s)).
``decoder_channels[s]`` is the width at output scale s, as in psdifm.py (index 0 = F_0, i + 1 = level i).
"""

from __future__ import annotations

import torch
from torch import nn

from psdif.models.outputs import DepthOutput
from psdif.models.layers import ConvELU, DispHead, ImageNormalize, ResNet18Encoder, upsample2x


class FSE(nn.Module):
    """fSE fusion: [B, C_high, h, w] + list of [B, C_k, h, w] -> [B, out, h, w] (SE-weighted concat, 1x1 conv)."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 16):
        super().__init__()
        mid = max(4, in_channels // reduction)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, mid, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(mid, in_channels, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, high: torch.Tensor, lows: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([high, *lows], dim=1)
        return self.project(x * self.se(x))


class _ConvNode(nn.Module):
    """Plain nested node: F(concat(high, lows))."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvELU(in_channels, out_channels)

    def forward(self, high: torch.Tensor, lows: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(torch.cat([high, *lows], dim=1))


class NestedDecoder(nn.Module):
    """HR-Depth-style nested dense decoder. forward(e [e_0..e_4]) -> (4 disparities, {1: F_1, 2: F_2, 3: F_3})."""

    def __init__(self, enc_channels: list[int], decoder_channels: list[int]):
        super().__init__()
        if len(enc_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError(f"model.decoder_channels={decoder_channels} must list 5 widths (scales 0..4)")
        width = list(decoder_channels[1:])  # width of X_{i,j>=1} at level i = 0..3

        def ch(i: int, j: int) -> int:
            return enc_channels[i] if j == 0 else width[i]

        self.reduce = nn.ModuleDict()
        self.nodes = nn.ModuleDict()
        for j in range(1, 5):
            for i in range(0, 5 - j):
                self.reduce[f"{i}_{j}"] = ConvELU(ch(i + 1, j - 1), width[i])
                in_ch = width[i] + sum(ch(i, k) for k in range(j))
                node = FSE if i + j == 4 else _ConvNode
                self.nodes[f"{i}_{j}"] = node(in_ch, width[i])
        self.up0 = ConvELU(width[0], decoder_channels[0])
        self.disp_heads = nn.ModuleList(DispHead(c) for c in (decoder_channels[0], width[0], width[1], width[2]))

    def _nodes(self, e: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        x = [[t] for t in e]  # x[i][j] = X_{i,j}
        for j in range(1, 5):
            for i in range(0, 5 - j):
                high = upsample2x(self.reduce[f"{i}_{j}"](x[i + 1][j - 1]))
                x[i].append(self.nodes[f"{i}_{j}"](high, x[i][:j]))
        return x

    def forward_depth(self, e: list[torch.Tensor]) -> torch.Tensor:
        x = self._nodes(e)
        return self.disp_heads[0](self.up0(upsample2x(x[0][4])))

    def forward(self, e: list[torch.Tensor]):
        x = self._nodes(e)
        f_scales = [self.up0(upsample2x(x[0][4])), x[0][4], x[1][3], x[2][2]]
        disps = [head(f) for head, f in zip(self.disp_heads, f_scales)]
        return disps, {1: x[0][4], 2: x[1][3], 3: x[2][2]}


class BaselineDepthNet(nn.Module):
    """ResNet-18 (width multiplier) + nested fSE decoder. forward(images [B,3,H,W] in [0,1]) -> DepthOutput."""

    def __init__(self, decoder_channels: list[int], width: float = 1.0):
        super().__init__()
        self.normalize = ImageNormalize()
        self.encoder = ResNet18Encoder(3, width)
        self.decoder = NestedDecoder(self.encoder.channels, decoder_channels)

    def forward_depth(self, images: torch.Tensor) -> torch.Tensor:
        """Scale-0 disparity [B, 1, H, W] in (0, 1)."""
        return self.decoder.forward_depth(self.encoder(self.normalize(images)))

    def forward(self, images: torch.Tensor):
        disps, feats = self.decoder(self.encoder(self.normalize(images)))
        return DepthOutput(disparities=disps, seg_logits=None, features=feats)
