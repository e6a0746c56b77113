"""Small building blocks shared by the PSDIF networks (paper §3.2).

- :class:`ConvELU`      the block ``F(.)`` of Eqs. 3-7: 3x3 conv (reflection padding) + ELU.
- :func:`upsample2x`    the block ``U(.)``: x2 bilinear upsampling.
- :class:`SpatialAttention`  SAM of Eqs. 5-6: ``x * sigmoid(conv([mean_c x, max_c x]))``.
- :class:`CoordinateAttention`  ``C(.)`` of Eq. 2 (Hou et al., CVPR 2021).
- :class:`DispHead`     3x3 conv + sigmoid: a disparity map in (0, 1).
- :class:`ImageNormalize`  ImageNet mean/std normalisation of [0, 1] RGB inside the nets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psdif.imagenet import IMAGENET_MEAN, IMAGENET_STD


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """``U(.)``: [B, C, h, w] -> [B, C, 2h, 2w], bilinear (align_corners=False)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ConvELU(nn.Module):
    """``F(.)``: 3x3 convolution (reflection padding, bias) followed by ELU. [B, Cin, h, w] -> [B, Cout, h, w]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")
        self.act = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DispHead(nn.Module):
    """Disparity head: 3x3 conv (reflection padding) to 1 channel + sigmoid. [B, C, h, w] -> [B, 1, h, w] in (0, 1)."""

    def __init__(self, in_channels: int, out_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class SpatialAttention(nn.Module):
    """SAM (Eqs. 5-6): a spatial gate computed from the feature itself and multiplied into it.

    ``SAM(x) = x * sigmoid(conv_k([mean_c(x), max_c(x)]))``; x: [B, C, h, w] -> [B, C, h, w].
    The conv maps the 2-channel [mean, max] map to 1 channel (k x k, zero padding, bias).
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map [B, 1, h, w] in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CoordinateAttention(nn.Module):
    """Coordinate attention ``C(.)`` of Eq. 2 (Hou, Zhou, Feng, CVPR 2021); x: [B, C, h, w] -> [B, C, h, w].

    1. z_h = mean of x over W -> [B, C, h, 1]; z_w = mean of x over H -> [B, C, 1, w].
    2. y = hswish(BN(conv1x1_shared(concat_H(z_h, z_w^T))))  -> [B, M, h + w, 1], M = max(8, C // reduction).
    3. split y into y_h [B, M, h, 1] and y_w [B, M, w, 1];
       a_h = sigmoid(conv1x1_h(y_h)) [B, C, h, 1], a_w = sigmoid(conv1x1_w(y_w^T)) [B, C, 1, w].
    4. out = x * a_h * a_w.
    """

    def __init__(self, channels: int, reduction: int = 32, min_mid: int = 8):
        super().__init__()
        mid = max(min_mid, channels // reduction)
        self.conv = nn.Conv2d(channels, mid, 1)
        self.bn = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, channels, 1)
        self.conv_w = nn.Conv2d(mid, channels, 1)

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_h [B, C, h, 1], a_w [B, C, 1, w]), both in (0, 1)."""
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)                      # [B, C, h, 1]
        z_w = x.mean(dim=2, keepdim=True).transpose(2, 3)      # [B, C, w, 1]
        y = self.act(self.bn(self.conv(torch.cat([z_h, z_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.conv_h(y_h))
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))
        return a_h, a_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_h, a_w = self.gates(x)
        return x * a_h * a_w


class ImageNormalize(nn.Module):
    """[B, 3k, H, W] RGB in [0, 1] (k stacked frames) -> ImageNet-normalised ``(x - mean) / std`` per channel
    (:func:`psdif.imagenet.imagenet_normalize`, with the constants as buffers that move with the network)."""

    def __init__(self, frames: int = 1):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN * frames).view(1, 3 * frames, 1, 1)
        std = torch.tensor(IMAGENET_STD * frames).view(1, 3 * frames, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def scaled_width(channels: int, width: float) -> int:
    """``round(channels * width)``, at least 8: the width multiplier used by the ResNet-18 nets."""
    return max(8, int(round(channels * width)))


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18 trunk (same module names: conv1, bn1, relu, maxpool, layer1..layer4; no fc) with a
    width multiplier; width 1.0 is exactly torchvision's ``resnet18`` so its state dict loads (minus ``fc``).

    forward(x: [B, in_channels, H, W]) -> [e_0 .. e_4], e_l: [B, channels[l], H / 2^(l+1), W / 2^(l+1)]
    (e_0 after conv1/bn1/relu, e_1 after maxpool + layer1, e_2..e_4 after layer2..layer4).
    """

    def __init__(self, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        c = [scaled_width(n, width) for n in (64, 128, 256, 512)]
        self.channels = [c[0], c[0], c[1], c[2], c[3]]
        self.conv1 = nn.Conv2d(in_channels, c[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layers, inplanes = [], c[0]
        for i, planes in enumerate(c):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e0 = self.relu(self.bn1(self.conv1(x)))
        e1 = self.layer1(self.maxpool(e0))
        e2 = self.layer2(e1)
        e3 = self.layer3(e2)
        e4 = self.layer4(e3)
        return [e0, e1, e2, e3, e4]

