"""Where the file behind a weights param comes from (paper §4.2; the layouts each file may hold and how their keys
map onto the networks are in ``psdif.models.weights``).

``model.encoder_weights`` / ``model.pose_weights`` is ``null`` (random init), ``imagenet``, ``pretrain`` or a
file path. ``imagenet`` is timm's ImageNet HRNet (Hugging Face hub: ``timm/hrnet_w18.ms_aug_in1k`` for
``msfan_size: w18``, ``timm/hrnet_w18_small_v2.ms_in1k`` for ``w18_small``; file ``model.safetensors``) or
torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (``resnet18-f37072fd.pth`` in the torch hub cache), found in
the local caches or downloaded; ``pretrain`` is the pretrain stage's file (``psdif.config.PRETRAIN_FILES``),
refused while it is missing or a placeholder.

:func:`check_weights_source` validates a params value at stage start without loading anything and fails at
once when ``imagenet`` is neither cached nor downloadable (``HF_HUB_OFFLINE=1``, or the host unreachable
within a few seconds), saying which file to download, where to put it and which param to set.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import torch

from psdif.config import PRETRAIN_FILES, PRETRAIN_TOKEN as PRETRAIN, ParamsError
from psdif.torchfile import load_torch

IMAGENET = "imagenet"
ENCODER_KEY = "model.encoder_weights"
POSE_KEY = "model.pose_weights"
CHECKPOINTS_DIR = "data/checkpoints"

# timm's ImageNet weights per MSFAN size (Hugging Face hub repo id; the file is model.safetensors).
TIMM_IMAGENET = {"w18": "timm/hrnet_w18.ms_aug_in1k", "w18_small": "timm/hrnet_w18_small_v2.ms_in1k"}
HF_FILES = ("model.safetensors", "pytorch_model.bin")
RESNET18_IMAGENET_FILE = "resnet18-f37072fd.pth"  # torchvision ResNet18_Weights.IMAGENET1K_V1
RESNET18_IMAGENET_URL = f"https://download.pytorch.org/models/{RESNET18_IMAGENET_FILE}"

PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "on", "yes", "true"}


class WeightsError(ValueError):
    """A weights file that does not fit the encoder, or a source that cannot be read; the message says why."""



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
    try:
        meta = load_torch(path, allow_numpy=True).get("meta", {})
    except ValueError as exc:
        raise WeightsError(f"{what}: {exc}; rerun the stage (`dvc repro`)") from None
    if meta.get("placeholder"):
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
