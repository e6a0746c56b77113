"""PSDIF networks (paper §3.2): depth nets for every Table-3 variant, the pose net, inference and export.

- ``build_depth_net(variant, cfg)``: MSFAN + PSDIFM (psdifm.py, msfan.py) or the ResNet-18 baseline
  (baseline.py); forward(images [B, 3, H, W] in [0, 1]) -> :class:`DepthOutput`.
- ``build_pose_net(cfg)``: pose.py; forward(pair [B, 6, H, W]) -> (axisangle [B, 1, 3], translation [B, 1, 3]).
- ``DepthPredictor``: images of any size -> metric-free depth [B, 1, H, W] via :func:`psdif.geometry.disp_to_depth`;
  ``export_onnx``, ``export_torchscript``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from psdif.config import ModelConfig
from psdif.geometry import disp_to_depth
from psdif.io import atomic_path
from psdif.models.baseline import BaselineDepthNet
from psdif.models.msfan import MSFAN
from psdif.models.outputs import DepthOutput
from psdif.models.pose import PoseNet
from psdif.models.psdifm import PSDIFNet
from psdif.models.weights import load_encoder_weights, load_pose_weights, load_resnet18_weights
from psdif.variants import Variant


__all__ = ["DepthOutput", "build_depth_net", "build_pose_net", "DepthPredictor", "load_depth_model",
           "load_pose_model", "not_trained", "NotTrainedError", "export_onnx", "export_torchscript", "MSFAN", "PSDIFNet", "BaselineDepthNet", "PoseNet",
           "load_encoder_weights"]


def build_depth_net(variant: Variant, cfg: ModelConfig) -> nn.Module:
    """The depth net of a Table-3 variant.

    msfan off -> ResNet-18 (``cfg.baseline_width``) + nested fSE decoder, no semantics; its encoder takes
    ``cfg.pose_weights`` (torchvision resnet18) when given. msfan on -> MSFAN(``cfg.msfan_size``) + PSDIFM
    with the semantic decoder iff ``variant.seg`` and the SAM exchange iff ``variant.psdifm``; the HRNet
    backbone takes ``cfg.encoder_weights`` when given.
    """
    if not variant.msfan:
        if variant.seg or variant.psdifm:
            raise ValueError(f"variant {variant.name}: seg/psdifm need the MSFAN encoder (msfan=true)")
        net = BaselineDepthNet(cfg.decoder_channels, cfg.baseline_width)
        if cfg.pose_weights:
            load_resnet18_weights(net.encoder, cfg.pose_weights, key="model.pose_weights")
        return net
    net = PSDIFNet(cfg.msfan_size, cfg.decoder_channels, cfg.num_classes, seg=variant.seg, exchange=variant.psdifm)
    if cfg.encoder_weights:
        load_encoder_weights(net.encoder, cfg.encoder_weights)
    return net


def build_pose_net(cfg: ModelConfig) -> PoseNet:
    """PoseNet of width ``cfg.pose_width``; ``cfg.pose_weights`` (torchvision resnet18) loaded when given."""
    net = PoseNet(cfg.pose_width)
    if cfg.pose_weights:
        load_pose_weights(net, cfg.pose_weights)
    return net


def _multiple_of_32(n: int) -> int:
    return max(32, -(-n // 32) * 32)


class DepthPredictor(nn.Module):
    """Inference wrapper: images [B, 3, H, W] in [0, 1], any H and W -> depth [B, 1, H, W] (scale-0 disparity).

    The net sees the images resized (bilinear) to ``size`` (its training height and width: ``info`` of
    :func:`load_depth_model`; None: H and W rounded up to multiples of 32, which the decoder's skip
    connections need) and its disparity is resized back to H x W (bilinear), as ``psdif predict`` and the
    Eigen protocol do. Resized, not padded: a self-supervised net reads depth from how large things appear at
    its training field of view, and padding would show it a wider view with borders it never saw.
    """

    def __init__(self, net: nn.Module, min_depth: float, max_depth: float, size: tuple[int, int] | None = None):
        super().__init__()
        self.net, self.min_depth, self.max_depth = net, float(min_depth), float(max_depth)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> "DepthPredictor":
        """The predictor of a ``model.pt``: its depth range and training size, in eval mode."""
        net, info = load_depth_model(path, device)
        cfg = info["model_cfg"]
        size = (info["height"], info["width"]) if info.get("height") and info.get("width") else None
        return cls(net, cfg["min_depth"], cfg["max_depth"], size).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        size = self.size or (_multiple_of_32(height), _multiple_of_32(width))
        x = images if (height, width) == size else F.interpolate(images, size=size, mode="bilinear",
                                                                  align_corners=False)
        disp = self.net.forward_depth(x)
        if disp.shape[-2:] != (height, width):
            disp = F.interpolate(disp, size=(height, width), mode="bilinear", align_corners=False)
        return disp_to_depth(disp, self.min_depth, self.max_depth)[1]


class _DispOnly(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.forward_depth(images)


def export_onnx(net: nn.Module, path: str | Path, height: int, width: int, opset: int = 17) -> Path:
    """Write ``net``'s inference path to ONNX (atomically), input ``image`` [B, 3, height, width] in [0, 1].

    A :class:`DepthPredictor` exports output ``depth``; a bare depth net exports ``disp`` (scale-0 sigmoid
    disparity). The batch axis is dynamic. The net is exported in eval mode and its mode is restored.
    """
    if not isinstance(net, DepthPredictor) and (height % 32 or width % 32):
        raise ValueError(f"export_onnx: height={height}, width={width} must be multiples of 32 for a bare depth "
                         "net (wrap it in DepthPredictor for any size)")
    path = Path(path)
    module, out_name = (net, "depth") if isinstance(net, DepthPredictor) else (_DispOnly(net), "disp")
    was_training = net.training
    net.eval()
    dummy = torch.rand(1, 3, height, width, device=next(net.parameters()).device)
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            # onnxscript (needed by the dynamo exporter) is not a dependency: use the TorchScript exporter
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message="Constant folding")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # sizes fixed at export
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["image"], output_names=[out_name],
                              dynamic_axes={"image": {0: "batch"}, out_name: {0: "batch"}},
                              opset_version=opset, dynamo=False)
    finally:
        net.train(was_training)
    return path


def export_torchscript(predictor: DepthPredictor, path: str | Path, height: int, width: int) -> Path:
    """Write ``predictor`` traced at input [1, 3, height, width] to a TorchScript file (atomically); load it
    with ``torch.jit.load`` (no psdif needed). The net is traced in eval mode and its mode is restored."""
    path = Path(path)
    was_training = predictor.training
    predictor.eval()
    dummy = torch.rand(1, 3, height, width, device=next(predictor.parameters()).device)
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # sizes fixed at export
            warnings.filterwarnings("ignore", category=FutureWarning)            # torch.jit's deprecation note
            torch.jit.save(torch.jit.trace(predictor, (dummy,)), str(tmp))
    finally:
        predictor.train(was_training)
    return path


def _model_file(path: str | Path) -> dict:
    """The dict of a ``model.pt`` written by :func:`psdif.train.train`; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model (run `dvc repro` to train it)")
    from psdif.torchfile import load_torch

    try:
        ckpt = load_torch(path)
    except ValueError as exc:  # truncated / not a torch file / pickled objects (refused, never run)
        raise RuntimeError(f"{exc}; not a PSDIF model file") from None
    if not isinstance(ckpt, dict):
        raise RuntimeError(f"{path}: not a PSDIF model file (holds a {type(ckpt).__name__}, not a dict)")
    if "not_run" in ckpt:
        raise NotTrainedError(f"{path}: {ckpt.get('variant', {}).get('name', 'this row')} was not trained: "
                              f"{ckpt['not_run']}", str(ckpt["not_run"]))
    missing = {"depth", "variant", "model_cfg"} - set(ckpt)
    if missing:
        raise RuntimeError(f"{path}: not a PSDIF model file (missing {sorted(missing)})")
    return ckpt


class NotTrainedError(RuntimeError):
    """A ``model.pt`` its train stage wrote for a row that could not train (``stages/train.py``, no labels);
    ``why``: the reason the file records."""

    def __init__(self, message: str, why: str):
        super().__init__(message)
        self.why = why


def not_trained(path: str | Path) -> str | None:
    """Why the ``model.pt`` at ``path`` holds no trained model (None: it does, or it is not a model file)."""
    try:
        _model_file(path)
    except NotTrainedError as exc:
        return exc.why
    except (FileNotFoundError, RuntimeError):
        return None
    return None


def load_depth_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A trained depth net from a ``model.pt`` written by :func:`psdif.train.train`, in eval mode.

    Returns (net, info) with info = {variant, model_cfg, height, width, step}. Errors name the file.
    """
    from psdif.config import ModelConfig as _ModelConfig
    from psdif.variants import get_variant

    ckpt = _model_file(path)
    variant = get_variant(ckpt["variant"]["name"])
    cfg = _ModelConfig(**ckpt["model_cfg"])
    net = build_depth_net(variant, dataclass_replace_weights(cfg))
    net.load_state_dict(ckpt["depth"])
    net.to(device).eval()
    info = {k: ckpt.get(k) for k in ("height", "width", "step")}
    info.update(variant=variant.name, model_cfg=ckpt["model_cfg"])
    return net, info


def load_pose_model(path: str | Path, device: str | torch.device = "cpu") -> PoseNet:
    """The pose net trained beside the depth net of a ``model.pt`` (the photometric score), in eval mode."""
    from psdif.config import ModelConfig as _ModelConfig

    ckpt = _model_file(path)
    if "pose" not in ckpt:
        raise RuntimeError(f"{path}: holds no pose net (written by an older psdif); re-run its train stage")
    net = build_pose_net(dataclass_replace_weights(_ModelConfig(**ckpt["model_cfg"])))
    net.load_state_dict(ckpt["pose"])
    return net.to(device).eval()


def dataclass_replace_weights(cfg: ModelConfig) -> ModelConfig:
    """The same architecture without initial-weight files (a trained state dict replaces them)."""
    import dataclasses

    return dataclasses.replace(cfg, encoder_weights=None, pose_weights=None)
