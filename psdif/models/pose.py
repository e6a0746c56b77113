"""PoseNet (paper Figure 1; Monodepth2's separate pose network): ResNet-18 on a frame pair + pose decoder.

Input: the pair [B, 6, H, W] in temporal order (earlier frame first), RGB in [0, 1]; normalised inside with
the ImageNet mean/std per frame. Encoder: :class:`~psdif.models.layers.ResNet18Encoder` with 6 input
channels (width ``model.pose_width``; 1.0 = torchvision resnet18). Decoder: 1x1 squeeze to 256w + ReLU,
two 3x3 convs 256w + ReLU, 1x1 conv to 6, mean over space, x 0.01 -> axis-angle [B, 1, 3] (radians) and
translation [B, 1, 3] (network units; metres up to the depth scale). The caller inverts the transform for
source frames before t (design.md §3).

The last conv starts at zero: the untrained net predicts zero motion, so the first warps are the identity
and the photometric gradient reaching the pose is informative from the first step. (Monodepth2 leaves the
default random init: a random, tiny, mostly wrong motion that the auto-mask then hides behind the identity
loss, so the pose drifts without a useful gradient for hundreds of steps; BENCHMARKS.md, "Embedded default",
and docs/paper_setting.md.) The other layers keep PyTorch's default init (or the encoder's pretrained one).
"""

from __future__ import annotations

import torch
from torch import nn

from psdif.models.layers import ImageNormalize, ResNet18Encoder, scaled_width

POSE_SCALE = 0.01  # Monodepth2's output scaling of the pose decoder


class PoseDecoder(nn.Module):
    """[B, C, h, w] (last encoder level) -> (axisangle [B, 1, 3], translation [B, 1, 3])."""

    def __init__(self, in_channels: int, width: float = 1.0):
        super().__init__()
        c = scaled_width(256, width)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, c, 1), nn.ReLU(inplace=True),           # squeeze
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, 6, 1),
        )
        nn.init.zeros_(self.net[-1].weight)  # zero motion at the start (module docstring)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pose = POSE_SCALE * self.net(x).mean(dim=(2, 3)).view(-1, 1, 6)
        return pose[..., :3], pose[..., 3:]


class PoseNet(nn.Module):
    """forward(pair [B, 6, H, W] in [0, 1]) -> (axisangle [B, 1, 3], translation [B, 1, 3])."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.normalize = ImageNormalize(frames=2)
        self.encoder = ResNet18Encoder(in_channels=6, width=width)
        self.decoder = PoseDecoder(self.encoder.channels[-1], width)

    def forward(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(self.encoder(self.normalize(pair))[-1])



FRAME_ORDER = (0, -1, 1)  # the frames of ``images`` in :func:`predict_poses`: target, previous, next


def predict_poses(pose_net: nn.Module, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """Monodepth2 convention: ``{s: T_{t->s} [B, 4, 4]}`` for the sources s = -1, +1 (target-to-source), from
    ``images`` [B, 3, 3, H, W] holding the target, previous and next frames (:data:`FRAME_ORDER`).

    Pairs go in temporal order ((t-1, t) and (t, t+1)); the pose of the earlier source is inverted.
    Both pairs run as ONE pose-network call on a 2B batch (one launch sequence, graph-capture friendly).
    """
    from psdif.geometry import transformation_from_parameters

    b = images.shape[0]
    target, prev, nxt = images[:, 0], images[:, 1], images[:, 2]
    pairs = torch.cat([torch.cat([prev, target], 1), torch.cat([target, nxt], 1)], 0)  # [2B, 6, H, W]
    axisangle, translation = pose_net(pairs)                                           # [2B, 1, 3] each
    t_prev = transformation_from_parameters(axisangle[:b], translation[:b], invert=True)
    t_next = transformation_from_parameters(axisangle[b:], translation[b:], invert=False)
    return {-1: t_prev, 1: t_next}
