"""The public Cityscapes DeepLabv3+ / ResNet-101 (output stride 16) pseudo-labeller, rebuilt exactly.

Real KITTI gets its 19-class Cityscapes train-id labels from the public checkpoint
``best_deeplabv3plus_resnet101_cityscapes_os16.pth``: :func:`load_cityscapes_deeplab` rebuilds its
architecture (torchvision ResNet-101 names, dilation only in layer4 after its first block, ASPP rates
6/12/18, 48-channel low-level projection concatenated first, bilinear resizing with align_corners=False)
and loads it strictly. ``docs/design.md`` ("Pseudo-labels") lists the facts this follows.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from psdif.semantics.cityscapes import CITYSCAPES_CLASSES
from psdif.torchfile import RefusedPickleError, load_torch, state_dict_mismatch


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the architecture; the message names it."""


# ===================================================================== Cityscapes DeepLabv3+ / ResNet-101

class _ResNet101OS16(nn.Module):
    """torchvision ResNet-101 trunk (no avgpool / fc) at output stride 16.

    ``replace_stride_with_dilation=[False, False, True]``: layer4 keeps stride 1; its first block is
    undilated (torchvision gives it the previous dilation, 1) and blocks 2-3 use dilation 2.
    Parameter names are torchvision's, so the checkpoint's ``backbone.*`` keys load as they are.
    """

    def __init__(self):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, 3, H, W] -> (low-level layer1 [B, 256, H/4, W/4], layer4 [B, 2048, H/16, W/16])."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class _ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average, 1x1 conv, BN, ReLU, resized back (bilinear, align_corners=False)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling of the checkpoint: ``convs`` = 1x1, three full 3x3 convs at ``rates``,
    image pooling (each conv, BN, ReLU); ``project`` = 1x1 5C -> C, BN, ReLU, dropout. Module and key names
    are those of the checkpoint (and of smp's ASPP with ``separable=False``; tests/test_segmentation.py
    compares the two), so the model needs no segmentation-models-pytorch."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, int, int], dropout: float):
        super().__init__()
        self.convs = nn.ModuleList([_conv_bn_relu(cin, cout), *(_conv_bn_relu(cin, cout, 3, r) for r in rates),
                                    _ImagePooling(cin, cout)])
        self.project = nn.Sequential(*_conv_bn_relu(5 * cout, cout), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class _DeepLabV3PlusHead(nn.Module):
    """DeepLabv3+ head of the public Cityscapes checkpoint (design.md §4.5).

    ``project``: 1x1 256->48 on layer1; ``aspp``: 1x1, three 3x3 convs at rates 6/12/18 and image pooling
    (:class:`_ASPP`), 1x1 1280->256 + dropout 0.1;
    ``classifier``: full 3x3 304->256, BN, ReLU, 1x1 256->C. The low-level features come FIRST in the
    concatenation; the ASPP output is resized bilinearly (align_corners=False) to the low-level size.
    """

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.project = _conv_bn_relu(256, 48)
        self.aspp = _ASPP(2048, 256, (6, 12, 18), dropout=0.1)
        self.classifier = nn.Sequential(_conv_bn_relu(304, 256, 3)[0], nn.BatchNorm2d(256), nn.ReLU(),
                                        nn.Conv2d(256, num_classes, 1))

    def forward(self, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """low: [B, 256, h, w], out: [B, 2048, h', w'] -> logits [B, C, h, w]."""
        low = self.project(low)
        context = F.interpolate(self.aspp(out), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, context], dim=1))


class CityscapesDeepLabV3Plus(nn.Module):
    """DeepLabv3+ / ResNet-101, output stride 16, of ``best_deeplabv3plus_resnet101_cityscapes_os16.pth``.

    forward: ImageNet-normalised RGB [B, 3, H, W] (any H, W) -> logits [B, C, H, W], resized from 1/4
    to the input size bilinearly (align_corners=False). 58.75 M parameters, 674 state tensors
    (BatchNorm running statistics and ``num_batches_tracked`` included, as in the checkpoint).
    """

    input_multiple = 1  # any input size works: no padding needed in predict_labels

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.backbone = _ResNet101OS16()
        self.classifier = _DeepLabV3PlusHead(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, out = self.backbone(x)
        logits = self.classifier(low, out)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def describe_model(model: nn.Module) -> dict:
    """``{"params": trainable + frozen parameter count, "state_tensors": len(state_dict())}``."""
    return {"params": sum(p.numel() for p in model.parameters()), "state_tensors": len(model.state_dict())}


def read_checkpoint(path: str | Path) -> dict:
    """The public checkpoint's dict (``model_state``, ``optimizer_state``, ``scheduler_state``, ``cur_itrs``,
    ``best_score``), unpickled with ``weights_only=True``: tensors, plain containers and numbers, and only the
    numpy types (``psdif.torchfile.numpy_globals``). Anything else (a class, a function call such as
    ``os.system``) is refused before it runs, with a :class:`CheckpointError` naming the file and the object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: checkpoint not found; set pseudolabel.checkpoint to the downloaded "
            "best_deeplabv3plus_resnet101_cityscapes_os16.pth, or to null to train the in-pipeline teacher")
    try:
        return load_torch(path, allow_numpy=True, what="torch checkpoint")
    except RefusedPickleError as exc:
        raise CheckpointError(f"{exc}. Use the public best_deeplabv3plus_resnet101_cityscapes_os16.pth from a "
                              "source you trust") from None
    except ValueError as exc:  # truncated zip, random bytes
        raise CheckpointError(f"{exc}; download the file again") from None


def load_cityscapes_deeplab(path: str | Path) -> nn.Module:
    """Load the public Cityscapes DeepLabv3+ / ResNet-101 (OS 16) checkpoint strictly (design.md §4.5, §7).

    path: a dict with ``model_state`` (674 tensors). Returns the model in eval mode on the CPU;
    forward: normalised RGB [B, 3, H, W] -> logits [B, 19, H, W]. Raises FileNotFoundError or
    :class:`CheckpointError` naming the file and the first mismatching keys.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected a dict with key 'model_state' (DeepLabV3Plus-Pytorch "
                              f"checkpoint format), found {found}")
    state = ckpt["model_state"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'model_state' is a {type(state).__name__}, expected a state dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    model = CityscapesDeepLabV3Plus(len(CITYSCAPES_CLASSES))
    problem = state_dict_mismatch(model.state_dict(), state, "DeepLabv3+ / ResNet-101 OS16", counters_optional=False,
                                  mine="model")
    if problem:
        raise CheckpointError(f"{path}: 'model_state' {problem}")
    model.load_state_dict(state, strict=True)
    return model.eval()
