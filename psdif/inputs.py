"""The check stage's logic (stages/check.py, ``psdif check``): params.yaml and every file it names, checked
before any other stage runs, so that a mistake stops the pipeline before a stage has deleted an output.

- params.yaml is validated (:func:`psdif.config.load_params`).
- Every file named in params is opened the way its stage will open it: ``pseudolabel.checkpoint`` through
  the pseudolabel stage's loader (:func:`psdif.semantics.deeplab.load_cityscapes_deeplab`: readable, no
  pickled code, layout, keys and shapes of DeepLabv3+ / ResNet-101 OS16), ``model.encoder_weights`` into the
  MSFAN encoder of ``model.msfan_size`` and ``model.pose_weights`` into the pose encoder (``model.pose_width``)
  and the baseline's ResNet-18 encoder (``model.baseline_width``), through :mod:`psdif.models.weights`.
  Loading the 230 MB checkpoint takes seconds, so a file whose SHA-256 and target were validated by an
  earlier check is not loaded again (``validated.json``).
- Every problem is collected and reported at once, one ``error:`` line each; exit status 2.
- The text of the last params.yaml that passed is kept verbatim (``params.yaml.ok``). Under ``dvc exp run``
  (DVC sets ``DVC_EXP_NAME`` / ``DVC_EXP_BASELINE_REV`` for the stages it runs), a refused params.yaml, which
  ``-S`` wrote, is put back byte for byte from that copy and the refused text is kept in ``params.yaml.rejected``;
  a plain ``dvc repro`` leaves a hand edit alone and only says what is wrong.
- On success it writes the validated params (``params.json``) and one fingerprint per input
  (psdif.paths.INPUT_FINGERPRINTS: the value and the file's SHA-256), the dependencies of the stages that read
  the file.

What DVC resolves before any stage runs cannot be checked here: ``-S train.seeds=0`` (a scalar where the
``foreach`` of the train stages needs a list) fails in DVC itself; ``psdif check`` says what is wrong, and
``dvc exp run -S 'train.seeds=[0]'`` is the spelling that works.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from psdif.config import Params, ParamsError, load_params, parse_sections, to_dict
from psdif.io import atomic_write_bytes, read_json, sha256_file, write_json
from psdif.models.sources import (ENCODER_KEY, POSE_KEY, PRETRAIN, PRETRAIN_FILES, RESNET18_IMAGENET_URL,
                                  cached_weights_file, check_weights_source)
from psdif.paths import INPUT_FINGERPRINTS, INPUTS, PARAMS_OK, VALIDATED_FILES as VALIDATED, VALIDATED_PARAMS

CHECKPOINT_KEY = "pseudolabel.checkpoint"
EXP_ENV = ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")  # set by `dvc exp run` for every stage it runs
REJECTED_SUFFIX = ".rejected"

# Where the files of the paper's setting come from (docs/paper_setting.md, "Where the files come from"):
# params key -> (file name, source, checksum). mmsegmentation and torchvision end a file name with the first
# 8 hex digits of its SHA-256; the DeepLabv3+ release publishes none (the check verifies its layout instead).
SOURCES = {
    CHECKPOINT_KEY: ("best_deeplabv3plus_resnet101_cityscapes_os16.pth",
                     "the DeepLabV3Plus-ResNet101 Cityscapes model (output stride 16) of "
                     "https://github.com/VainF/DeepLabV3Plus-Pytorch (its README's pretrained-model links)",
                     "no published checksum"),
    ENCODER_KEY: ("fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth",
                  "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/fcn_hr18_512x1024_160k_cityscapes/"
                  "fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth",
                  "SHA-256 starts with 221e4a4f"),
    POSE_KEY: ("resnet18-f37072fd.pth", f"{RESNET18_IMAGENET_URL} (`imagenet` fetches it into the torch hub cache)",
               "SHA-256 starts with f37072fd"),
}


# ------------------------------------------------------------------------------------------ files

def _load_checkpoint(path: Path, p: Params) -> None:
    from psdif.semantics.teacher import load_labeller

    load_labeller(path)


def _load_encoder(path: Path, p: Params) -> None:
    from psdif.models.msfan import MSFAN
    from psdif.models.weights import load_encoder_weights

    load_encoder_weights(MSFAN(p.model.msfan_size), path, verbose=False)


def _load_pose(path: Path, p: Params) -> None:
    from psdif.models.layers import ResNet18Encoder
    from psdif.models.pose import PoseNet
    from psdif.models.weights import load_pose_weights, load_resnet18_weights

    load_pose_weights(PoseNet(p.model.pose_width), path, verbose=False)
    load_resnet18_weights(ResNet18Encoder(3, p.model.baseline_width), path, key=POSE_KEY,
                          what="baseline ResNet-18 encoder", verbose=False)


def _target(key: str, p: Params) -> tuple[str, Callable[[Path, Params], None]]:
    """(what the file must load into, the loader) for a params key naming a file."""
    if key == CHECKPOINT_KEY:
        return ("DeepLabv3+ / ResNet-101 OS16 or a psdif teacher.pt (the pseudolabel stage's loader)",
                _load_checkpoint)
    if key == ENCODER_KEY:
        return f"MSFAN encoder, model.msfan_size {p.model.msfan_size}", _load_encoder
    return (f"pose encoder (model.pose_width {p.model.pose_width:g}) and baseline encoder "
            f"(model.baseline_width {p.model.baseline_width:g})"), _load_pose


def _value(p: Params, key: str):
    section, name = key.split(".")
    return getattr(getattr(p, section), name)


def input_file(key: str, p: Params) -> Path | None:
    """The local file a params key names (None: null, ``pretrain`` or ``imagenet`` not cached yet)."""
    value = _value(p, key)
    if value is None:
        return None
    if key == CHECKPOINT_KEY:
        return Path(value) if Path(value).is_file() else None
    if value == PRETRAIN:  # the pretrain stage makes it later and the train stages load it
        return None
    return cached_weights_file(value, key, p.model.msfan_size if key == ENCODER_KEY else None)


def source_problems(p: Params) -> list[str]:
    """What can be said without opening a file: missing paths, ``imagenet`` on an offline machine."""
    problems = []
    for key, size in ((ENCODER_KEY, p.model.msfan_size), (POSE_KEY, None)):
        try:
            check_weights_source(_value(p, key), key, size)
        except ParamsError as exc:
            problems.append(str(exc))
    ckpt = p.pseudolabel.checkpoint
    if ckpt is not None and not Path(ckpt).is_file():
        problems.append(f"{CHECKPOINT_KEY}={ckpt}: no such file; download "
                        "best_deeplabv3plus_resnet101_cityscapes_os16.pth (README, 'Real KITTI') and point "
                        f"{CHECKPOINT_KEY} at it, or set it to null to train the in-pipeline teacher")
    return problems


def file_key(problem: str) -> str | None:
    """The params key naming the file a problem line is about (None: not about a file of :data:`SOURCES`)."""
    for key in SOURCES:
        imagenet_hrnet = key == ENCODER_KEY and problem.startswith(f"{key}=imagenet")  # timm's file, not this one
        if problem.startswith((f"{key}=", f"{key}:", f"{key} ")) and not imagenet_hrnet:
            return key
    return None


def where_to_get(problems: list[str]) -> list[str]:
    """One message for every file problem of a run: each file, its source and checksum (empty if none)."""
    keys = list(dict.fromkeys(k for k in map(file_key, problems) if k))
    if not keys:
        return []
    lines = [f"{len(keys)} file(s) named in params are missing or do not load; get them all, then `dvc repro` "
             "(docs/paper_setting.md, 'Where the files come from'):"]
    for key in keys:
        name, source, checksum = SOURCES[key]
        lines.append(f"  - {key}: {name} from {source}; {checksum}")
    return lines


def load_problem(key: str, path: Path, p: Params, loader: Callable[[Path, Params], None],
                 against: str) -> str | None:
    """None when ``path`` loads into ``against``, else one line naming the key, the file and what is wrong."""
    try:
        loader(path, p)
    except Exception as exc:  # noqa: BLE001 - whatever a bad file raises is reported as one line, never a traceback
        # ValueError / OSError: WeightsError, CheckpointError, ParamsError, FileNotFoundError, naming the file
        text = " ".join(str(exc).split())
        if not isinstance(exc, (ValueError, OSError)):
            text = f"{type(exc).__name__}: {text}"
        if text.startswith(f"{path}: "):
            text = text[len(str(path)) + 2:]
        if not text.startswith(key):
            text = f"{key}={_value(p, key)}: {text}"
        return f"{text} (checked against the {against}; fix the file or the param before `dvc repro`)"
    return None


def check_files(p: Params, validated: dict) -> tuple[list[str], dict, dict]:
    """Open every file params name (a file validated before with the same content and target is skipped).

    Returns (problems, validated records of the files that load, SHA-256 per key of the files present)."""
    problems, records, digests = [], {}, {}
    for key in INPUT_FINGERPRINTS:
        path = input_file(key, p)
        if path is None:
            continue
        digest = digests[key] = sha256_file(path)
        against, loader = _target(key, p)
        record = {"value": _value(p, key), "file": str(path), "sha256": digest, "against": against}
        if validated.get(key) != record:
            problem = load_problem(key, path, p, loader, against)
            if problem:
                problems.append(problem)
                continue
        records[key] = record
    return problems, records, digests


def fingerprint(key: str, p: Params, digests: dict) -> dict:
    """What a downstream stage needs to know about the input named by ``key``: its value and its content."""
    value = _value(p, key)
    out = {"param": key, "value": value}
    if value is None:
        return out
    if value == PRETRAIN and key in PRETRAIN_FILES:  # made later by the pretrain stage, itself a dependency
        out["file"] = f"{PRETRAIN_FILES[key]} (the pretrain stage's output)"
    elif key in digests:
        out["sha256"] = digests[key]
    else:
        out["sha256"] = f"not yet downloaded ({value})"
    return out


# ------------------------------------------------------------------------------------------ params.yaml

def under_exp_run(env=None) -> bool:
    env = os.environ if env is None else env
    return any(env.get(name) for name in EXP_ENV)


def restore_params(params_path: Path, refused: bytes) -> str | None:
    """Put back the last params.yaml that passed (``PARAMS_OK``) and keep ``refused`` beside it; what was done."""
    ok = Path(PARAMS_OK)
    if not ok.is_file():
        return None
    good = ok.read_bytes()
    if good == refused:
        return None
    rejected = params_path.with_name(params_path.name + REJECTED_SUFFIX)
    atomic_write_bytes(rejected, refused)
    atomic_write_bytes(params_path, good)
    return (f"dvc exp run: {params_path} is back, byte for byte, to the last version that passed the check "
            f"({PARAMS_OK}); the refused one is kept in {rejected} (fix it and run `dvc exp run` with -S again)")


def _file_sections(params_path: Path):
    """The ``model`` and ``pseudolabel`` sections of a params file that does not validate as a whole."""
    import yaml

    try:
        raw = yaml.safe_load(params_path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return parse_sections(raw, ("model", "pseudolabel"))


def check(params_path: str | Path = "params.yaml", env=None, write: bool = True) -> int:
    """Validate params.yaml and the files it names; print one ``error:`` line per problem. 0 or 2.

    ``write``: on success, write the check stage's outputs (validated params, fingerprints, records)."""
    params_path = Path(params_path)
    text = params_path.read_bytes() if params_path.is_file() else None
    problems: list[str] = []
    p = files = None
    try:
        p = files = load_params(params_path)
    except ParamsError as exc:
        problems += exc.problems
        files = _file_sections(params_path)  # the files can still be checked when their sections are valid
    try:
        validated = read_json(VALIDATED) if Path(VALIDATED).is_file() else {}
    except ValueError:  # malformed: everything is loaded again
        validated = {}
    records, digests, file_lines = {}, {}, []
    if files is not None:
        missing = source_problems(files)
        found, records, digests = check_files(files, validated if isinstance(validated, dict) else {})
        problems += [f"{params_path}: {m}" for m in missing + found]
        file_lines = where_to_get(missing + found)
    if problems:
        for m in problems:
            print(f"error: {m}", file=sys.stderr)
        for line in file_lines:
            print(line, file=sys.stderr)
        if any("train.seeds=" in m and "must be a list" in m for m in problems):
            print("error: train.seeds is a list even for one seed: `dvc exp run -S 'train.seeds=[0]'` (with a "
                  "single number DVC itself stops: failed to resolve 'stages.train_baseline.foreach')", file=sys.stderr)
        done = restore_params(params_path, text) if text is not None and under_exp_run(env) else None
        if done:
            print(f"error: {done}", file=sys.stderr)
        elif Path(PARAMS_OK).is_file() and Path(PARAMS_OK).read_bytes() != text:
            print(f"error: the last {params_path} that passed the check is {PARAMS_OK} (what changed: "
                  f"diff {PARAMS_OK} {params_path}; to go back to it: cp {PARAMS_OK} {params_path})",
                  file=sys.stderr)
        return 2
    if write:
        raw = to_dict(p)
        write_json(VALIDATED_PARAMS, raw)
        for key, out in INPUT_FINGERPRINTS.items():
            write_json(out, fingerprint(key, p, digests))
        write_json(VALIDATED, records)
        atomic_write_bytes(PARAMS_OK, text)
    print(f"{params_path}: ok" + (f"; input fingerprints in {INPUTS}" if write else
                                  " (it and every file it names; nothing written)"))
    return 0
