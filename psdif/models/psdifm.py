"""PSDIFM: the parallel semantic-depth interactive fusion decoder (paper §3.2.3, Figure 3, Eqs. 3-7).

Two decoders run from level 4 (1/32) up to level 0 (1/2) on the shared MSFAN features f_0..f_4:

    Feat_4 = Seg_4 = FF_4 = FS_4 = f_4                                  (Eqs. 3-6, l = 4)
    Feat_l = F(concat(U(FF_{l+1}), f_l))      l = 0..3                 (Eq. 3)
    Seg_l  = F(concat(U(FS_{l+1}), f_l))      l = 0..3                 (Eq. 4)
    FF_l   = Feat_l + SAM(Seg_l)              (exchange on; else Feat_l)   (Eq. 5)
    FS_l   = Seg_l  + SAM(Feat_l)             (exchange on; else Seg_l)    (Eq. 6)
    F_0 = F(U(FF_0)) (full size), F_1 = FF_0, F_2 = FF_1, F_3 = FF_2   (Eq. 7)

F = 3x3 conv + ELU, U = x2 bilinear, SAM = spatial attention gate (layers.py). Disparity s = sigmoid(conv(F_s)).
Semantics: logits = conv(F(U(FS_0))) at full size.

Channels: ``decoder_channels[s]`` is the width at output scale s (1/2^s): index 0 = F_0 (full size) and the
semantic F(U(FS_0)); index l + 1 = Feat_l / Seg_l / FF_l / FS_l at level l (1/2^(l+1)), l = 0..3. Level 4 is
f_4 itself (Eq. 3, l = 4), so it has the encoder's width.
"""

from __future__ import annotations

import torch
from torch import nn

from psdif.models.outputs import DepthOutput
from psdif.models.layers import ConvELU, DispHead, ImageNormalize, SpatialAttention, upsample2x
from psdif.models.msfan import MSFAN


class PSDIFMDecoder(nn.Module):
    """Dual decoder. forward(feats [f_0..f_4]) -> (disparities [4 x [B,1,H/2^s,W/2^s]], seg_logits | None,
    features {1: FF_0, 2: FF_1, 3: FF_2}).

    seg=False: the depth decoder alone (variant ``msfan``). seg=True, exchange=False: both decoders, no SAM
    (``msfan_seg``: FF_l = Feat_l, FS_l = Seg_l). exchange=True: Eqs. 5-6 (``msfan_seg_psdifm``, ``full``).
    """

    def __init__(self, enc_channels: list[int], decoder_channels: list[int], num_classes: int,
                 seg: bool, exchange: bool):
        super().__init__()
        if len(enc_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError(f"model.decoder_channels={decoder_channels} must list 5 widths (scales 0..4)")
        if exchange and not seg:
            raise ValueError("the PSDIFM exchange (psdifm) needs the semantic decoder (seg)")
        self.seg, self.exchange = seg, exchange
        width = list(decoder_channels[1:]) + [enc_channels[4]]  # width[l] = channels of FF_l, l = 0..4
        self.depth_convs = nn.ModuleList(ConvELU(width[l + 1] + enc_channels[l], width[l]) for l in range(4))
        self.depth_up = ConvELU(width[0], decoder_channels[0])
        head_in = [decoder_channels[0], width[0], width[1], width[2]]
        self.disp_heads = nn.ModuleList(DispHead(c) for c in head_in)
        if seg:
            self.seg_convs = nn.ModuleList(ConvELU(width[l + 1] + enc_channels[l], width[l]) for l in range(4))
            self.seg_up = ConvELU(width[0], decoder_channels[0])
            self.seg_head = nn.Conv2d(decoder_channels[0], num_classes, 3, padding=1, padding_mode="reflect")
        if exchange:
            self.sam_seg = nn.ModuleList(SpatialAttention() for _ in range(4))    # SAM(Seg_l) -> depth
            self.sam_depth = nn.ModuleList(SpatialAttention() for _ in range(4))  # SAM(Feat_l) -> semantics

    def _fuse(self, feats: list[torch.Tensor], depth_only: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Eqs. 3-6: returns ([FF_0 .. FF_3], FS_0 or None)."""
        ff = feats[4]
        fs = feats[4]
        ff_levels: list[torch.Tensor] = [feats[4]] * 4
        for l in (3, 2, 1, 0):
            feat = self.depth_convs[l](torch.cat([upsample2x(ff), feats[l]], dim=1))      # Eq. 3
            if self.seg:
                seg = self.seg_convs[l](torch.cat([upsample2x(fs), feats[l]], dim=1))     # Eq. 4
                if self.exchange:
                    ff = feat + self.sam_seg[l](seg)                                         # Eq. 5
                    fs = seg + self.sam_depth[l](feat) if (l > 0 or not depth_only) else seg  # Eq. 6
                else:
                    ff, fs = feat, seg
            else:
                ff = feat
            ff_levels[l] = ff
        return ff_levels, (fs if self.seg and not depth_only else None)

    def forward_depth(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Scale-0 disparity only [B, 1, H, W] (inference path: no coarse heads, no semantic output)."""
        ff_levels, _ = self._fuse(feats, depth_only=True)
        return self.disp_heads[0](self.depth_up(upsample2x(ff_levels[0])))

    def forward(self, feats: list[torch.Tensor]):
        ff_levels, fs0 = self._fuse(feats, depth_only=False)
        f_scales = [self.depth_up(upsample2x(ff_levels[0])), ff_levels[0], ff_levels[1], ff_levels[2]]  # Eq. 7
        disps = [head(f) for head, f in zip(self.disp_heads, f_scales)]
        seg_logits = self.seg_head(self.seg_up(upsample2x(fs0))) if fs0 is not None else None
        return disps, seg_logits, {1: ff_levels[0], 2: ff_levels[1], 3: ff_levels[2]}


class PSDIFNet(nn.Module):
    """MSFAN + PSDIFM (variants msfan, msfan_seg, msfan_seg_psdifm, full).

    forward(images [B, 3, H, W] RGB in [0, 1], H and W multiples of 32) -> DepthOutput;
    forward_depth(images) -> scale-0 disparity [B, 1, H, W] (inference path).
    """

    def __init__(self, msfan_size: str, decoder_channels: list[int], num_classes: int, seg: bool, exchange: bool):
        super().__init__()
        self.normalize = ImageNormalize()
        self.encoder = MSFAN(msfan_size)
        self.decoder = PSDIFMDecoder(self.encoder.channels, decoder_channels, num_classes, seg, exchange)

    def forward_depth(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder.forward_depth(self.encoder(self.normalize(images)))

    def forward(self, images: torch.Tensor) -> DepthOutput:
        disps, seg_logits, feats = self.decoder(self.encoder(self.normalize(images)))
        return DepthOutput(disparities=disps, seg_logits=seg_logits, features=feats)
