"""PSDIF networks (paper §3.2): depth nets for every Table-3 variant, the pose net, inference and export.

- ``build_depth_net(variant, cfg)``: MSFAN + PSDIFM (psdifm.py, msfan.py) or the ResNet-18 baseline
  (baseline.py); forward(images [B, 3, H, W] in [0, 1]) -> :class:`DepthOutput`.
- ``build_pose_net(cfg)``: pose.py; forward(pair [B, 6, H, W]) -> (axisangle [B, 1, 3], translation [B, 1, 3]).
- ``DepthPredictor``: images -> metric-free depth [B, 1, H, W] via :func:`psdif.geometry.disp_to_depth`; ``export_onnx``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

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


__all__ = ["DepthOutput", "build_depth_net", "build_pose_net", "DepthPredictor",
           "export_onnx", "MSFAN", "PSDIFNet", "BaselineDepthNet", "PoseNet", "load_encoder_weights"]


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


class DepthPredictor(nn.Module):
    """Inference wrapper: images [B, 3, H, W] in [0, 1] -> depth [B, 1, H, W] (scale-0 disparity only)."""

    def __init__(self, net: nn.Module, min_depth: float, max_depth: float):
        super().__init__()
        self.net, self.min_depth, self.max_depth = net, float(min_depth), float(max_depth)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return disp_to_depth(self.net.forward_depth(images), self.min_depth, self.max_depth)[1]


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
    if height % 32 or width % 32:
        raise ValueError(f"export_onnx: height={height}, width={width} must be multiples of 32")
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
            torch.onnx.export(module, (dummy,), str(tmp), input_names=["image"], output_names=[out_name],
                              dynamic_axes={"image": {0: "batch"}, out_name: {0: "batch"}},
                              opset_version=opset, dynamo=False)
    finally:
        net.train(was_training)
    return path


def load_depth_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A trained depth net from a ``model.pt`` written by :func:`psdif.train.train`, in eval mode.

    Returns (net, info) with info = {variant, model_cfg, height, width, step}. Errors name the file.
    """
    from psdif.config import ModelConfig as _ModelConfig
    from psdif.variants import get_variant

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
    missing = {"depth", "variant", "model_cfg"} - set(ckpt)
    if missing:
        raise RuntimeError(f"{path}: not a PSDIF model file (missing {sorted(missing)})")
    variant = get_variant(ckpt["variant"]["name"])
    cfg = _ModelConfig(**ckpt["model_cfg"])
    net = build_depth_net(variant, dataclass_replace_weights(cfg))
    net.load_state_dict(ckpt["depth"])
    net.to(device).eval()
    info = {k: ckpt.get(k) for k in ("height", "width", "step")}
    info.update(variant=variant.name, model_cfg=ckpt["model_cfg"])
    return net, info


def dataclass_replace_weights(cfg: ModelConfig) -> ModelConfig:
    """The same architecture without initial-weight files (a trained state dict replaces them)."""
    import dataclasses

    return dataclasses.replace(cfg, encoder_weights=None, pose_weights=None)
