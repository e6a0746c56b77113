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

:func:`check_weights_source` validates a params value at stage start without loading anything and fails at
once when ``imagenet`` is neither cached nor downloadable (``HF_HUB_OFFLINE=1``, or the host unreachable
within a few seconds), saying which file to download, where to put it and which param to set.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from psdif.config import PRETRAIN_FILES, PRETRAIN_TOKEN as PRETRAIN, ParamsError

if TYPE_CHECKING:  # imported for annotations only: msfan/layers/pose import this module
    from psdif.models.layers import ResNet18Encoder
    from psdif.models.msfan import MSFAN
    from psdif.models.pose import PoseNet

IMAGENET = "imagenet"
ENCODER_KEY = "model.encoder_weights"
POSE_KEY = "model.pose_weights"
CHECKPOINTS_DIR = "data/checkpoints"

# timm's ImageNet weights per MSFAN size (Hugging Face hub repo id; the file is model.safetensors).
TIMM_IMAGENET = {"w18": "timm/hrnet_w18.ms_aug_in1k", "w18_small": "timm/hrnet_w18_small_v2.ms_in1k"}
HF_FILES = ("model.safetensors", "pytorch_model.bin")
RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"  # torchvision ResNet18_Weights.IMAGENET1K_V1
RESNET18_IMAGENET_URL = f"https://download.pytorch.org/models/{RESNET18_IMAGENET_FILE}"

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
PROBE_TIMEOUT_S = 5.0
_NUMPY_SAFE = {"scalar", "dtype", "_reconstruct", "ndarray"}
_TRUE = {"1", "on", "yes", "true"}


class WeightsError(ValueError):
    """A weights file that does not fit the encoder, or a source that cannot be read; the message says why."""


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

def _numpy_globals(names: list[str]):
    """(object, pickled name) pairs for numpy scalar / dtype / array reconstruction globals, else None."""
    pairs = []
    for name in names:
        module, _, attr = name.rpartition(".")
        ok = module.startswith("numpy") and (attr in _NUMPY_SAFE or module == "numpy.dtypes")
        if not ok:
            return None
        try:
            pairs.append((getattr(importlib.import_module(module), attr), name))
        except (ImportError, AttributeError):
            return None
    try:  # numpy >= 1.25 rebuilds dtypes through these classes (not listed by the scan above)
        dtypes = importlib.import_module("numpy.dtypes")
        pairs += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    except ImportError:
        pass
    return pairs


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``; numpy scalars in a container (e.g. training metadata) are allowed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - reported with the file name below
        first = exc
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - legacy (non-zip) format or not a torch file at all
        names = None
    pairs = _numpy_globals(names) if names else None
    if pairs:
        with torch.serialization.safe_globals(pairs):
            return torch.load(path, map_location="cpu", weights_only=True)
    if names:
        raise WeightsError(
            f"{path}: holds Python objects besides tensors ({', '.join(names[:5])}); it is not loaded with "
            "pickle's arbitrary code execution. If you trust it, save its state dict alone: python -c "
            f"\"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c.get('state_dict', c), '{path}.state_dict.pth')\" and point the param there")
    raise WeightsError(f"{path}: not a readable torch or safetensors file, probably truncated "
                       f"({type(first).__name__}: {str(first).splitlines()[0][:200]}); download it again")


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

def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


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
                      state: Mapping[str, torch.Tensor], limit: int = 5) -> str | None:
    missing = [k for k in own if k not in state and not _is_counter(k)]
    unused = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if not (missing or unused or shapes):
        return None
    n_own = sum(1 for k in own if not _is_counter(k))
    matched = sum(1 for k, v in own.items() if not _is_counter(k) and k in state
                  and tuple(state[k].shape) == tuple(v.shape))
    parts = [f"{key}={path}: matches {matched} of the {n_own} {what} tensors (all are needed)"]
    if missing:
        parts.append(f"{len(missing)} missing from the file (first: {missing[:limit]})")
    if unused:
        parts.append(f"{len(unused)} file tensors unused and not a known head (first: {unused[:limit]})")
    if shapes:
        parts.append(f"{len(shapes)} with another shape (first: " + ", ".join(
            f"{k}: file {a} vs encoder {b}" for k, a, b in shapes[:limit]) + ")")
    return "; ".join(parts)


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


# ============================================================================== sources (imagenet / path)

def _offline_flag() -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host (or the HTTPS proxy) opens within ``timeout`` seconds
    (name resolution included: the probe runs in a daemon thread)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    parsed = urlparse(proxy if proxy else url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hf_cached(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in HF_FILES:
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _torch_hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_IMAGENET_FILE


def _imagenet_unavailable(key: str, msfan_size: str | None, why: str) -> ParamsError:
    if key == POSE_KEY:
        dest = f"{CHECKPOINTS_DIR}/{RESNET18_IMAGENET_FILE}"
        return ParamsError(
            f"{key}: imagenet weights (torchvision ResNet18_Weights.IMAGENET1K_V1) are not cached at "
            f"{_torch_hub_file()} and {why}; download {RESNET18_IMAGENET_URL} on a machine with internet, "
            f"place it at {dest} and set {key}: {dest} (or copy it to {_torch_hub_file()})")
    repo = TIMM_IMAGENET[msfan_size]
    name = repo.split("/", 1)[1]
    dest = f"{CHECKPOINTS_DIR}/{name}.safetensors"
    return ParamsError(
        f"{key}: imagenet weights ({repo}, msfan_size {msfan_size}) are not in the Hugging Face cache "
        f"({_hf_cache_dir()}) and {why}; download {_hf_endpoint()}/{repo}/resolve/main/model.safetensors "
        f"on a machine with internet, place it at {dest} and set {key}: {dest} (the paper's Cityscapes "
        "initialisation, §4.2, is a Cityscapes HRNet file instead: see psdif/models/weights.py)")


def _why_offline(url: str, probe: bool) -> str | None:
    """None when a download can be attempted, else why not."""
    if _offline_flag():
        return "this machine is offline (HF_HUB_OFFLINE is set)"
    if probe and not _reachable(url):
        host = urlparse(url).hostname
        return f"this machine is offline ({host} is not reachable within {PROBE_TIMEOUT_S:g} s)"
    return None


def _check_imagenet_size(key: str, msfan_size: str | None) -> None:
    if key == ENCODER_KEY and msfan_size not in TIMM_IMAGENET:
        raise ParamsError(f"{key}: imagenet weights exist for model.msfan_size w18 and w18_small, not "
                          f"{msfan_size!r}; use null (random init) for {msfan_size!r}")


def _check_key(key: str) -> None:
    if key not in (ENCODER_KEY, POSE_KEY):
        raise ValueError(f"unknown weights param {key!r} (expected {ENCODER_KEY} or {POSE_KEY})")


def check_weights_source(value: str | None, key: str, msfan_size: str | None = None) -> None:
    """Validate a weights param at stage start (nothing is loaded); raises :class:`ParamsError`.

    value: ``None`` (nothing to check), ``"imagenet"`` or a file path. key: ``model.encoder_weights`` (an
    HRNet source for ``msfan_size``) or ``model.pose_weights`` (torchvision ResNet-18). ``imagenet`` passes
    when the file is cached, or when the hub is reachable (probed for at most a few seconds; no probe when
    ``HF_HUB_OFFLINE`` is set); otherwise the error says which file to download, where to place it and
    which param to point at it. A path must be an existing file.
    """
    _check_key(key)
    if value is None or value == PRETRAIN:  # pretrain: the pipeline makes the file (psdif/pretrain.py)
        return
    if value == IMAGENET:
        _check_imagenet_size(key, msfan_size)
        if key == POSE_KEY:
            if _torch_hub_file().is_file():
                return
            why = _why_offline(RESNET18_IMAGENET_URL, probe=True)
        else:
            repo = TIMM_IMAGENET[msfan_size]
            if _hf_cached(repo):
                return
            why = _why_offline(f"{_hf_endpoint()}/{repo}", probe=True)
        if why:
            raise _imagenet_unavailable(key, msfan_size, why)
        return
    if not Path(value).is_file():
        raise ParamsError(_no_such_file(value, key))


def _no_such_file(value: str, key: str) -> str:
    near = value.strip().lower()
    hint = f" (did you mean {near}?)" if near in (IMAGENET, PRETRAIN) else ""
    return (f"{key}={value}: no such file{hint}; set it to null, imagenet, pretrain or the path of a downloaded "
            "weights file (see psdif/models/weights.py for the supported files)")


def _pretrain_file(key: str) -> Path:
    """The pretrain stage's output named by the token; refused when missing or a placeholder."""
    path, what = Path(PRETRAIN_FILES[key]), f"{key}: pretrain names {PRETRAIN_FILES[key]}"
    if not path.is_file():
        raise FileNotFoundError(f"{what}, the pretrain stage's output, not made yet; run `dvc repro`")
    if (meta := torch.load(path, map_location="cpu", weights_only=True).get("meta", {})).get("placeholder"):
        raise WeightsError(f"{what}, a placeholder ({meta.get('reason')}); rerun the stage (`dvc repro`)")
    return path


def resolve_weights(value: str, key: str, msfan_size: str | None = None) -> Path:
    """The local file behind a weights param: the path itself, or the cached / downloaded ImageNet file."""
    _check_key(key)
    if value == PRETRAIN:
        return _pretrain_file(key)
    if value != IMAGENET:
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(_no_such_file(value, key))
        return path
    _check_imagenet_size(key, msfan_size)
    if key == POSE_KEY:
        target = _torch_hub_file()
        if target.is_file():
            return target
        why = _why_offline(RESNET18_IMAGENET_URL, probe=False)
        if why:
            raise _imagenet_unavailable(key, msfan_size, why)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(RESNET18_IMAGENET_URL, str(target),
                                           hash_prefix=re.search(r"-([a-f0-9]+)\.", target.name).group(1))
        except Exception as exc:  # noqa: BLE001 - no network, proxy, disk
            raise _imagenet_unavailable(key, msfan_size, f"the download failed ({type(exc).__name__}: "
                                                         f"{exc})") from None
        return target
    repo = TIMM_IMAGENET[msfan_size]
    cached = _hf_cached(repo)
    if cached:
        return Path(cached)
    why = _why_offline(f"{_hf_endpoint()}/{repo}", probe=False)
    if why:
        raise _imagenet_unavailable(key, msfan_size, why)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, HF_FILES[0]))
    except Exception as exc:  # noqa: BLE001
        raise _imagenet_unavailable(key, msfan_size, f"the download failed ({type(exc).__name__}: "
                                                     f"{exc})") from None


def cached_weights_file(value: str | None, key: str, msfan_size: str | None = None) -> Path | None:
    """The local file a weights param names, without downloading: the path itself, the cached ImageNet
    file, or None (null, or ``imagenet`` not cached yet)."""
    _check_key(key)
    if value is None:
        return None
    if value == PRETRAIN:
        return Path(PRETRAIN_FILES[key]) if Path(PRETRAIN_FILES[key]).is_file() else None
    if value != IMAGENET:
        return Path(value) if Path(value).is_file() else None
    if key == POSE_KEY:
        return _torch_hub_file() if _torch_hub_file().is_file() else None
    if msfan_size not in TIMM_IMAGENET:
        return None
    cached = _hf_cached(TIMM_IMAGENET[msfan_size])
    return Path(cached) if cached else None


def check_model_weights(model_cfg) -> None:
    """:func:`check_weights_source` for both weights params of a ``ModelConfig``."""
    check_weights_source(model_cfg.encoder_weights, ENCODER_KEY, model_cfg.msfan_size)
    check_weights_source(model_cfg.pose_weights, POSE_KEY)


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
