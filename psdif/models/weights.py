"""Initial encoder weights (paper §4.2): HRNet-W18 for MSFAN, torchvision ResNet-18 for the pose net and the
Table-3 baseline.

Paper §4.2: "We initiate the parameters of some high-resolution representation layers with the HRNet model
pre-trained on Cityscapes, and the depth and segmentation layers are randomly initialized." Here the HRNet
backbone of MSFAN (``MSFAN.backbone``, timm module names) takes the file; its coordinate-attention layers and
every decoder stay randomly initialised. The pose net (Monodepth2) and the HR-Depth-style baseline start from
an ImageNet ResNet-18.

``model.encoder_weights`` (MSFAN's HRNet backbone) is ``null`` (random init), ``imagenet``, ``pretrain`` (the
``pretrain`` stage's file, psdif/pretrain.py, in a layout below; accepted by the check before it exists) or a
file path. ``imagenet`` means timm's ImageNet weights, fetched from the Hugging Face hub when not cached:
``timm/hrnet_w18.ms_aug_in1k`` (``msfan_size: w18``) or ``timm/hrnet_w18_small_v2.ms_in1k`` (``w18_small``),
file ``model.safetensors``. A path may hold any of these layouts (``.safetensors`` or a torch pickle; the
loader finds the tensors inside ``{'state_dict': ...}`` / ``{'model': ...}`` containers, strips the
``module.`` / ``model.`` / ``backbone.`` prefixes and drops the heads named below):

* timm ``hrnet_w18`` / ``hrnet_w18_small_v2`` state dict: ``torch.save(model.state_dict())``, or the Hugging
  Face files ``timm/hrnet_w18.ms_aug_in1k``, ``timm/hrnet_w18.ms_in1k``, ``timm/hrnet_w18_small_v2.ms_in1k``,
  ``timm/hrnet_w18_small_v2.gluon_in1k`` -> ``model.safetensors`` / ``pytorch_model.bin``.
  Heads dropped: ``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``.
* HRNet-Image-Classification (official ImageNet release, plain state dict):
  ``hrnetv2_w18_imagenet_pretrained.pth`` (W18), ``hrnet_w18_small_model_v2.pth`` (W18-Small-v2).
  Same head names as timm.
* HRNet-Semantic-Segmentation (plain dict written from ``FullModel``, keys ``model.*`` and
  ``loss.criterion.weight``; ``module.`` too when saved from DataParallel): Cityscapes
  ``hrnet_w18_small_v2_cityscapes_cls19_1024x2048_trainset.pth`` (that repository publishes Cityscapes
  files for W48 and W18-Small-v1/v2 only; a W18 one trained with its code has the same layout).
  Heads dropped: ``last_layer``, ``loss``, OCR ``conv3x3_ocr``, ``ocr_gather_head``, ``ocr_distri_head``,
  ``cls_head``, ``aux_head``.
* mmsegmentation FCN-HRNet (``{'meta': ..., 'state_dict': {'backbone.*', 'decode_head.*'}}``): Cityscapes
  ``fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth`` (also ``_40k_`` ...``-f196fb4e``,
  ``_80k_`` ...``-4e7b345e``; W18) and ``fcn_hr18s_512x1024_160k_cityscapes_20200602_190901-4a0797ea.pth``
  (W18-Small, the v2 configuration). Heads dropped: ``decode_head``, ``auxiliary_head``.

Key mapping. All four write the backbone under the same module paths, verified against the public sources
(timm ``timm/models/hrnet.py``; HRNet-Image-Classification ``lib/models/cls_hrnet.py``;
HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` and ``tools/test.py``, which strips ``model.``;
mmsegmentation ``mmseg/models/backbones/hrnet.py``, whose ``build_norm_layer(..., postfix=1)`` names the
stem norms ``bn1`` / ``bn2``): stem ``conv1 bn1 conv2 bn2``; ``layer1.<i>.{conv1..3,bn1..3,downsample.0/1}``;
``transition<s>.<b>.0/1`` (a branch whose width changes) or ``transition<s>.<b>.<k>.0/1`` (a new, strided
branch); ``stage<s>.<m>.branches.<b>.<i>.{conv1,bn1,conv2,bn2}``; ``stage<s>.<m>.fuse_layers.<i>.<j>.0/1``
(j > i: 1x1 conv + BN, then an upsampling module without parameters) and ``fuse_layers.<i>.<j>.<k>.0/1``
(j < i: strided 3x3 convs). Where timm keeps an ``nn.Identity`` the others keep ``None``: neither has
parameters. So after the prefixes are stripped the mapping is the identity; ``tests/test_weights.py``
derives the public key names from the construction rules above and checks them against timm's.
One functional difference remains: HRNet-Semantic-Segmentation and current mmsegmentation upsample bilinearly
inside the fusion (timm, HRNet-Image-Classification and older mmsegmentation: nearest); MSFAN keeps timm's
nearest upsampling whatever the file.

Size: HRNet-W18 files need ``model.msfan_size: w18``; HRNet-W18-Small-v2 files (``hrnet_w18_small_v2``,
``fcn_hr18s``) need ``w18_small``. A W18 file is refused by ``w18_small`` (and the other way round) instead
of being truncated; the error says which size the file holds.

``model.pose_weights`` (pose encoder and the baseline's ResNet-18 encoder): ``null``, ``imagenet``
(torchvision ``ResNet18_Weights.IMAGENET1K_V1``: ``resnet18-f37072fd.pth``, torch hub cache), ``pretrain`` or
a path to a torchvision-layout ``resnet18`` state dict (``fc.*`` dropped) at width multiplier 1.0, or at the
encoder's multiplier (``model.pose_width`` / ``model.baseline_width``: same names, every width scaled, as the
pretrain stage writes them). The pose net's 6-channel conv1 takes the RGB kernel repeated for both frames
and halved.

Loading is strict: every backbone tensor must come from the file with its shape (only BatchNorm
``num_batches_tracked`` counters may be absent: old files lack them and momentum BN does not use them), and
every other file tensor must be a known head. Otherwise a ``ValueError`` names the file, how much matched,
and the first unmatched keys both ways. Each load prints one line (loaded / total, skipped heads by prefix).

Where the file behind a param comes from (``imagenet`` caches and downloads, ``pretrain``, a path):
``psdif.models.sources``; reading a file without running what it holds: ``psdif.torchfile``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from psdif.models.sources import (ENCODER_KEY, POSE_KEY, WeightsError, resolve_weights)
from psdif.torchfile import RefusedPickleError, load_torch, state_dict_mismatch

if TYPE_CHECKING:  # imported for annotations only: msfan/layers/pose import this module
    from psdif.models.layers import ResNet18Encoder
    from psdif.models.msfan import MSFAN
    from psdif.models.pose import PoseNet

# Wrappers around a whole model: DataParallel, HRNet-Semantic-Segmentation's FullModel, mmseg's EncoderDecoder.
STRIP_PREFIXES = ("module.", "model.", "backbone.")
# Heads of each public layout (first key component after the prefixes), dropped and counted.
HRNET_HEADS = {
    "incre_modules": "classification head", "downsamp_modules": "classification head",
    "final_layer": "classification head", "classifier": "classification head",          # timm / HRNet-Cls
    "last_layer": "HRNetV2 seg head", "loss": "loss weights",                             # HRNet-Seg
    "conv3x3_ocr": "OCR head", "ocr_gather_head": "OCR head", "ocr_distri_head": "OCR head",
    "cls_head": "OCR head", "aux_head": "OCR head",
    "decode_head": "mmseg decode head", "auxiliary_head": "mmseg auxiliary head",         # mmsegmentation
}
RESNET_HEADS = {"fc": "classifier"}
# Known HRNet family members: (width of branch 1, layer1 blocks, stage2/3/4 modules) -> (name, msfan_size).
HRNET_FAMILY = {
    (18, 4, 1, 4, 3): ("HRNet-W18", "w18"),
    (18, 2, 1, 3, 2): ("HRNet-W18-Small-v2", "w18_small"),
    (16, 1, 1, 1, 1): ("HRNet-W18-Small-v1", None),
    (8, 1, 1, 1, 1): ("the CPU-size HRNet of msfan_size tiny", "tiny"),
}


@dataclass
class LoadReport:
    """What a load did: ``loaded`` of the module's ``total`` tensors came from ``source``."""

    key: str
    source: str
    what: str                       # "MSFAN encoder", "pose encoder", "ResNet-18 encoder"
    layout: str
    loaded: int
    total: int
    kept_init: dict[str, int] = field(default_factory=dict)   # module part -> tensors left at their init
    skipped: dict[str, int] = field(default_factory=dict)     # file prefix group -> tensors dropped
    note: str = ""

    def line(self) -> str:
        kept = ", ".join(f"{n} {part} tensors keep their init" for part, n in self.kept_init.items())
        skipped = ", ".join(f"{g} {n}" for g, n in sorted(self.skipped.items())) or "none"
        extra = f"; {self.note}" if self.note else ""
        kept = f"; {kept}" if kept else ""
        return (f"{self.key}: loaded {self.loaded}/{self.total} {self.what} tensors from {self.source} "
                f"[{self.layout}]{kept}; skipped file tensors: {skipped}{extra}")


# ============================================================================== reading files

def _torch_load(path: Path):
    """The file's object, read with ``psdif.torchfile.load_torch`` (numpy scalars allowed: training metadata)."""
    try:
        return load_torch(path, allow_numpy=True)
    except RefusedPickleError as exc:
        raise WeightsError(
            f"{exc}. If you trust it, save its state dict alone: python -c "
            f"\"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c.get('state_dict', c), '{path}.state_dict.pth')\" and point the param there") from None
    except ValueError as exc:
        raise WeightsError(f"{exc}; download it again") from None


def _find_tensors(obj, path: Path, trail: str = "") -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: the dict itself when its values are (mostly) tensors, else
    the first of ``state_dict`` / ``model_state`` / ``model`` / ``module`` / ``net`` that holds one."""
    if isinstance(obj, Mapping):
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and 2 * len(tensors) >= len(obj):
            return tensors
        for name in ("state_dict", "model_state", "model", "module", "net"):
            if isinstance(obj.get(name), Mapping):
                return _find_tensors(obj[name], path, f"{trail}['{name}']")
        found = sorted(map(str, obj))[:10]
        raise WeightsError(f"{path}: no state dict of tensors found at {trail or 'the top level'} "
                           f"(keys: {found})")
    raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file: ``.safetensors``, or a torch pickle (plain state dict or container)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc}); "
                               "download it again") from None
    return _find_tensors(_torch_load(path), path)


def strip_prefixes(key: str) -> str:
    """``module.model.conv1.weight`` -> ``conv1.weight`` (wrapper prefixes, repeatedly)."""
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


# ============================================================================== matching

def split_state(raw: Mapping[str, torch.Tensor], heads: Mapping[str, str]
                ) -> tuple[dict[str, torch.Tensor], Counter]:
    """Strip wrapper prefixes and drop known heads: (backbone candidates, dropped tensors per head group)."""
    state, skipped = {}, Counter()
    for key, value in raw.items():
        key = strip_prefixes(key)
        group = key.split(".", 1)[0]
        if group in heads:
            skipped[group] += 1
        else:
            state[key] = value
    return state, skipped


def _layout(raw_keys, skipped: Counter, suffix: str, kind: str) -> str:
    fmt = "safetensors" if suffix == ".safetensors" else "torch"
    if kind == "resnet":
        return f"torchvision ResNet layout, {fmt}"
    prefixes = {k.split(".", 1)[0] for k in raw_keys}
    groups = set(skipped)
    if "backbone" in prefixes or groups & {"decode_head", "auxiliary_head"}:
        return f"mmsegmentation layout (backbone.*), {fmt}"
    if "model" in prefixes or groups & {"last_layer", "loss", "conv3x3_ocr", "ocr_gather_head",
                                        "ocr_distri_head", "cls_head", "aux_head"}:
        return f"HRNet-Semantic-Segmentation layout (model.*), {fmt}"
    return f"timm / HRNet-Image-Classification layout, {fmt}"


def describe_hrnet(state: Mapping[str, torch.Tensor]) -> tuple[str, str | None]:
    """(description, msfan_size or None) of the HRNet a (prefix-stripped) state dict holds."""
    t = state.get("transition1.0.0.weight")
    if t is None or t.ndim != 4:
        return "no HRNet (it has no transition1.0.0.weight)", None

    def count(prefix: str) -> int:
        return len({k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)})

    sig = (int(t.shape[0]), count("layer1."), count("stage2."), count("stage3."), count("stage4."))
    if sig in HRNET_FAMILY:
        name, size = HRNET_FAMILY[sig]
        return name, size
    return (f"an HRNet-W{sig[0]} (layer1 {sig[1]} blocks, stage2/3/4 {sig[2]}/{sig[3]}/{sig[4]} modules), "
            "not a W18 configuration"), None


def _mismatch_message(key: str, path, what: str, own: Mapping[str, torch.Tensor],
                      state: Mapping[str, torch.Tensor]) -> str | None:
    problem = state_dict_mismatch(own, state, what, mine="encoder", unused="unused and not a known head")
    return f"{key}={path}: {problem}" if problem else None


def _copy_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> int:
    """Load ``state`` (a subset of module's keys: counters may be absent) strictly; returns tensors taken."""
    full = dict(module.state_dict())
    taken = 0
    for k in full:
        if k in state:
            full[k] = state[k]
            taken += 1
    module.load_state_dict(full, strict=True)
    return taken


# ============================================================================== loaders

def load_encoder_weights(encoder: MSFAN, source: str | Path, key: str = ENCODER_KEY,
                         verbose: bool = True) -> LoadReport:
    """Load an HRNet file (or ``imagenet``) into ``encoder.backbone`` strictly; see the module docstring.

    The coordinate-attention layers keep their random init. Returns the :class:`LoadReport` (and prints its
    line when ``verbose``). Raises FileNotFoundError / :class:`ParamsError` for a missing source and
    :class:`WeightsError` (a ValueError) naming the file for one that does not fit.
    """
    path = resolve_weights(str(source), key, encoder.size)
    raw = read_state_dict(path)
    state, skipped = split_state(raw, HRNET_HEADS)
    own = encoder.backbone.state_dict()
    problem = _mismatch_message(key, path, f"HRNet backbone (msfan_size {encoder.size})", own, state)
    if problem:
        desc, size = describe_hrnet(state)
        if size and size != encoder.size:
            hint = f"the file holds {desc}: set model.msfan_size {size}"
        elif size is None:
            hint = (f"the file holds {desc}; MSFAN needs HRNet-W18 (msfan_size w18) or "
                    "HRNet-W18-Small-v2 (msfan_size w18_small) weights")
        else:
            hint = f"the file holds {desc} but not all of its tensors"
        raise WeightsError(f"{problem}. {hint}")
    taken = _copy_into(encoder.backbone, state)
    total_backbone = len(own)
    attention = len(encoder.attention.state_dict())
    note = ""
    if taken < total_backbone:
        note = (f"{total_backbone - taken} BatchNorm num_batches_tracked counters are absent in the file "
                "and stay 0 (unused by momentum BatchNorm)")
    report = LoadReport(key, str(path), "MSFAN encoder", _layout(raw.keys(), skipped, path.suffix, "hrnet"),
                        taken, total_backbone + attention, kept_init={"coordinate-attention": attention},
                        skipped=dict(skipped), note=note)
    if verbose:
        print(report.line(), flush=True)
    return report


def load_resnet18_weights(encoder: ResNet18Encoder, source: str | Path, key: str = POSE_KEY,
                          what: str = "ResNet-18 encoder", verbose: bool = True) -> LoadReport:
    """Load torchvision ``resnet18`` weights (a file or ``imagenet``) into ``encoder`` strictly.

    ``fc.*`` is dropped. When ``encoder.conv1`` takes 3k channels (k stacked frames), the RGB conv1 weight
    [C, 3, 7, 7] is repeated k times along the input channels and divided by k (so a stack of k equal
    frames gives the pretrained response). The file's width multiplier (conv1 has 64 x width kernels:
    torchvision's own files 1.0, the pretrain stage's ``model.pose_width``) must be the encoder's.
    """
    path = resolve_weights(str(source), key)
    raw = read_state_dict(path)
    state, skipped = split_state(raw, RESNET_HEADS)
    w = state.get("conv1.weight")
    in_ch = encoder.conv1.in_channels
    note = ""
    if w is not None and w.ndim == 4 and w.shape[1] == 3 and in_ch != 3:
        if in_ch % 3:
            raise WeightsError(f"{key}={path}: cannot spread RGB conv1 weights over {in_ch} input channels")
        k = in_ch // 3
        state["conv1.weight"] = torch.cat([w] * k, dim=1) / k
        note = f"conv1 RGB kernel repeated over {k} frames and divided by {k}"
    own = encoder.state_dict()
    problem = _mismatch_message(key, path, what, own, state)
    if problem:
        width = encoder.channels[-1] / 512
        last = state.get("layer4.1.conv2.weight")
        file_width = last.shape[0] / 512 if last is not None and last.ndim == 4 else width
        hint = (f"the file holds a ResNet-18 of width multiplier {file_width:g}, the {what} has {width:g}: set "
                f"model.baseline_width / model.pose_width to {file_width:g}, or use weights made at {width:g}"
                if file_width != width else "a torchvision-named resnet18 state dict of the encoder's width is needed")
        raise WeightsError(f"{problem}. {hint}")
    taken = _copy_into(encoder, state)
    report = LoadReport(key, str(path), what, _layout(raw.keys(), skipped, path.suffix, "resnet"),
                        taken, len(own), skipped=dict(skipped), note=note)
    if verbose:
        print(report.line(), flush=True)
    return report


def load_pose_weights(net: PoseNet, source: str | Path, verbose: bool = True) -> LoadReport:
    """torchvision resnet18 weights -> the pose encoder; conv1 duplicated over the 2 frames and halved."""
    return load_resnet18_weights(net.encoder, source, key=POSE_KEY, what="pose encoder", verbose=verbose)
