"""``psdif export``: a trained ``model.pt`` as an ONNX or TorchScript file for use without psdif.

    psdif export --onnx MODEL.pt --out model.onnx [--height H --width W]
    psdif export --torchscript MODEL.pt --out model.ts [--height H --width W]

Both hold :class:`psdif.models.DepthPredictor`: input ``image`` float32 [B, 3, H, W], RGB in [0, 1]; output
``depth`` [B, 1, H, W], relative depth (the model's min/max depth range, unknown global scale). H, W default
to the model's training size; the file works at the size it was exported for (ONNX: any batch size), and
the net inside sees its training size (``DepthPredictor`` resizes in and out). ONNX needs the optional
``onnx`` package: ``pip install psdif[export]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

INSTALL_HINT = "pip install psdif[export]"


class ExportError(Exception):
    """A problem that stops ``psdif export`` (exit status 2)."""


def export_model(model: str | Path, out: str | Path, fmt: str, height: int | None = None,
                 width: int | None = None) -> Path:
    """Export ``model`` (a model.pt) to ``out`` as ``fmt`` ("onnx" | "torchscript"); returns ``out``."""
    from psdif.models import DepthPredictor, export_onnx, export_torchscript
    from psdif.predict import PredictError, load_model

    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ExportError(f"--onnx needs the onnx package, which is not installed: {INSTALL_HINT}")
    try:
        net, info = load_model(model, "cpu")
    except PredictError as exc:
        raise ExportError(str(exc)) from None
    cfg = info["model_cfg"]
    predictor = DepthPredictor(net, cfg["min_depth"], cfg["max_depth"], (info["height"], info["width"])).eval()
    height, width = height or int(info["height"]), width or int(info["width"])
    if height < 1 or width < 1:
        raise ExportError(f"--height {height} --width {width}: must be positive")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out}: is a folder; give the file to write")
    if fmt == "onnx":
        return export_onnx(predictor, out, height, width)
    return export_torchscript(predictor, out, height, width)


def cmd_export(args) -> int:
    fmt = "onnx" if args.onnx else "torchscript"
    model = args.onnx or args.torchscript
    try:
        path = export_model(model, args.out, fmt, args.height, args.width)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({fmt}, from {model})")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``psdif export`` on the ``psdif`` command's subparsers."""
    p = sub.add_parser("export", help="a trained model.pt as ONNX or TorchScript (depth for any image size)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--onnx", metavar="MODEL.pt", help=f"export MODEL.pt to ONNX (needs `{INSTALL_HINT}`)")
    fmt.add_argument("--torchscript", metavar="MODEL.pt", help="export MODEL.pt to TorchScript (torch.jit.load)")
    p.add_argument("--out", required=True, help="the file to write (atomically)")
    p.add_argument("--height", type=int, default=None, help="input height (default: the model's training height)")
    p.add_argument("--width", type=int, default=None, help="input width (default: the model's training width)")
    p.set_defaults(func=cmd_export)
    return p
