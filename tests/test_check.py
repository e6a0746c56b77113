"""The check stage (stages/check.py, psdif.inputs): files named in params are opened as their stages open them,
every problem is reported in one run before anything is deleted, and a refused `dvc exp run -S` leaves
params.yaml as it was."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from psdif import inputs
from psdif.config import preset_path
from psdif.paths import INPUT_FINGERPRINTS, PARAMS_OK, VALIDATED_FILES, VALIDATED_PARAMS
from tests.project import copy_tracked

REPO = Path(__file__).resolve().parents[1]
MARKER = "pwned.txt"


def _stage():
    spec = importlib.util.spec_from_file_location("check_stage", REPO / "stages/check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Exploit:
    """Unpickling this runs os.system: it writes MARKER if anything ever executes the file's pickle."""

    def __init__(self, where: Path):
        self.where = where

    def __reduce__(self):
        return os.system, (f"touch {self.where}",)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A working directory with the embedded params (teacher labeller, no weight files); returns helpers."""
    monkeypatch.chdir(tmp_path)
    for name in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    raw = yaml.safe_load(preset_path("embedded").read_text())
    raw["model"].update(encoder_weights=None, pose_weights=None)

    def write(**changes) -> Path:
        for key, value in changes.items():
            section, name = key.split("__")
            raw[section][name] = value
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    write()
    return tmp_path, write


def _bad_files(d: Path) -> dict[str, Path]:
    """Random bytes, a crafted pickle (would run a shell command) and a readable file of another layout."""
    d.mkdir(exist_ok=True)
    random_bytes = d / "random.pth"
    random_bytes.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.uint8).tolist()))
    truncated = d / "truncated.pth"  # a torch file cut short (an interrupted download)
    torch.save({"model_state": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    crafted = d / "crafted.pth"
    torch.save({"model_state": {"w": torch.zeros(1)}, "x": _Exploit(d / MARKER)}, crafted)
    plain_pickle = d / "plain_pickle.pth"  # a bare pickle (not torch's zip format) with the same payload
    plain_pickle.write_bytes(pickle.dumps(_Exploit(d / MARKER)))
    return {"random": random_bytes, "truncated": truncated, "crafted": crafted, "plain pickle": plain_pickle}


def _run(capsys, stage=None, argv=()) -> tuple[int, str]:
    stage = stage or _stage()
    try:
        stage.main(list(argv))
        status = 0
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr().err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("kind", ["random", "truncated", "crafted", "plain pickle", "wrong layout"])
def test_a_bad_pseudolabel_checkpoint_fails_the_check(project, capsys, kind):
    root, write = project
    files = _bad_files(root / "w")
    files["wrong layout"] = root / "w" / "resnet.pth"  # a readable DeepLabV3Plus-Pytorch dict, wrong network
    torch.save({"model_state": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, files["wrong layout"])
    path = files[kind]
    write(pseudolabel__checkpoint=str(path))
    status, err = _run(capsys)
    assert status == 2
    [line] = _errors(err)
    assert "pseudolabel.checkpoint" in line and str(path) in line, line
    # random bytes may start with pickle opcodes: refused as unreadable or as holding objects, never run
    expected = {"random": ["not a readable torch checkpoint", "refused to load"], "crafted": ["refused to load"],
                "plain pickle": ["refused to load", "not a readable torch checkpoint"],
                "truncated": ["not a readable torch checkpoint"],
                "wrong layout": ["matches 0 of the 674 DeepLabv3+"]}[kind]
    assert any(e in line for e in expected), line
    assert "Traceback" not in err
    assert not (root / "w" / MARKER).exists()  # the pickle never ran
    assert not (root / VALIDATED_PARAMS).exists()  # nothing written: the next stage has nothing to start from


@pytest.mark.parametrize("kind", ["random", "truncated", "crafted", "plain pickle", "wrong layout"])
def test_bad_encoder_weights_fail_the_check(project, capsys, kind):
    from psdif.models.layers import ResNet18Encoder

    root, write = project
    files = _bad_files(root / "w")
    files["wrong layout"] = root / "w" / "resnet18.pth"  # a ResNet-18 state dict where HRNet is needed
    torch.save(ResNet18Encoder(3, 0.25).state_dict(), files["wrong layout"])
    path = files[kind]
    write(model__encoder_weights=str(path))
    status, err = _run(capsys)
    assert status == 2
    [line] = _errors(err)
    assert "model.encoder_weights" in line and str(path) in line, line
    expected = {"random": ["not a readable torch", "holds Python objects"],
                "truncated": ["not a readable torch"], "crafted": ["holds Python objects besides tensors"],
                # a bare pickle is not torch's format: refused as unreadable or as holding objects
                "plain pickle": ["holds Python objects", "not a readable torch"],
                "wrong layout": ["the file holds no HRNet"]}[kind]
    assert any(e in line for e in expected), line
    assert "Traceback" not in err
    assert not (root / "w" / MARKER).exists()


def test_pose_weights_must_fit_both_resnet_encoders(project, capsys):
    """model.pose_weights goes into the pose net (pose_width) and the baseline (baseline_width)."""
    from psdif.models.layers import ResNet18Encoder

    root, write = project
    path = root / "resnet18_w05.pth"
    torch.save(ResNet18Encoder(3, 0.5).state_dict(), path)
    write(model__pose_weights=str(path), model__pose_width=0.5, model__baseline_width=0.25)
    status, err = _run(capsys)
    [line] = _errors(err)
    assert status == 2 and "model.pose_weights" in line and "baseline ResNet-18 encoder" in line, line
    write(model__pose_weights=str(path), model__pose_width=0.5, model__baseline_width=0.5)
    status, err = _run(capsys)
    assert status == 0, err


def test_every_problem_is_reported_in_one_run(project, capsys):
    root, write = project
    files = _bad_files(root / "w")
    write(pseudolabel__checkpoint=str(files["random"]), model__encoder_weights=str(files["crafted"]),
          model__pose_weights=str(root / "missing.pth"))
    status, err = _run(capsys)
    lines = _errors(err)
    assert status == 2
    for key, path in (("pseudolabel.checkpoint", files["random"]), ("model.encoder_weights", files["crafted"]),
                      ("model.pose_weights", root / "missing.pth")):
        assert sum(key in line and str(path) in line for line in lines) == 1, (key, lines)


def test_params_problems_and_file_problems_come_together(project, capsys):
    """A bad seed, a misspelled key and a crafted checkpoint: three error lines in one run (the files are
    checked whenever their own sections are valid)."""
    root, write = project
    files = _bad_files(root / "w")
    write(synthetic__seed=-5, pseudolabel__checkpoint=str(files["crafted"]), loss__mu33=1)
    status, err = _run(capsys)
    lines = _errors(err)
    assert status == 2 and len(lines) == 3, lines
    assert any("synthetic.seed=-5" in line for line in lines)
    assert any("unknown parameter loss.mu33" in line for line in lines)
    assert any("pseudolabel.checkpoint" in line and str(files["crafted"]) in line for line in lines)
    assert not (root / "w" / MARKER).exists()


def test_valid_files_pass_and_are_loaded_once_per_content(project, capsys, monkeypatch):
    from psdif.models.msfan import MSFAN

    root, write = project
    path = root / "hrnet.pth"
    torch.save(MSFAN("tiny").backbone.state_dict(), path)
    write(model__encoder_weights=str(path))
    loads = []
    real = inputs._load_encoder
    monkeypatch.setattr(inputs, "_load_encoder", lambda *a: loads.append(a) or real(*a))
    assert _run(capsys) == (0, "")
    assert len(loads) == 1
    record = json.loads((root / VALIDATED_FILES).read_text())["model.encoder_weights"]
    assert record["sha256"] == json.loads((root / INPUT_FINGERPRINTS["model.encoder_weights"]).read_text())["sha256"]
    assert _run(capsys) == (0, "")
    assert len(loads) == 1  # same content, same target: hashed, not loaded again
    write(model__encoder_weights=str(path), model__msfan_size="w18_small")  # another target: loaded again
    status, err = _run(capsys)
    assert status == 2 and len(loads) == 2 and "set model.msfan_size tiny" in err, err
    write(model__encoder_weights=str(path))
    path.write_bytes(os.urandom(2048))  # replaced at the same path: loaded again, refused
    status, err = _run(capsys)
    assert status == 2 and len(loads) == 3 and "model.encoder_weights" in err


def test_the_public_checkpoint_layout_passes_once(project, capsys, monkeypatch):
    """best_deeplabv3plus_resnet101_cityscapes_os16.pth as published (model_state, optimizer_state, numpy
    best_score; random weights here) passes; the second check only hashes it."""
    import numpy as np

    from psdif.semantics.deeplab import CityscapesDeepLabV3Plus

    root, write = project
    path = root / "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": CityscapesDeepLabV3Plus().state_dict(),
                "optimizer_state": {"state": {}, "param_groups": []}, "scheduler_state": {},
                "best_score": np.float64(0.7)}, path)
    write(pseudolabel__checkpoint=str(path))
    loads = []
    real = inputs._load_checkpoint
    monkeypatch.setattr(inputs, "_load_checkpoint", lambda *a: loads.append(a) or real(*a))
    assert _run(capsys) == (0, "") and _run(capsys) == (0, "")
    assert len(loads) == 1
    fp = json.loads((root / INPUT_FINGERPRINTS["pseudolabel.checkpoint"]).read_text())
    assert fp == {"param": "pseudolabel.checkpoint", "value": str(path),
                  "sha256": __import__("hashlib").sha256(path.read_bytes()).hexdigest()}


def test_a_failed_check_deletes_nothing_and_writes_nothing(project, capsys):
    """The outputs of the last good run (labels, the check's own records) are as they were."""
    root, write = project
    assert _run(capsys)[0] == 0
    labels = root / "data/pseudolabels/2011_09_26/x/0000000000.png"
    labels.parent.mkdir(parents=True)
    labels.write_bytes(b"label")
    before = {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    files = _bad_files(root / "w")
    write(pseudolabel__checkpoint=str(files["crafted"]))
    assert _run(capsys)[0] == 2
    after = {p: p.read_bytes() for p in (root / "data").rglob("*") if p.is_file()}
    assert after == before


def test_refused_params_under_dvc_exp_run_are_put_back(project, capsys, monkeypatch):
    """Under `dvc exp run` (DVC_EXP_NAME set) the params.yaml -S wrote goes back, byte for byte, to the last one
    that passed, and the refused text is kept; a hand edit under a plain `dvc repro` is left alone."""
    root, write = project
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("checkpoint: null", "checkpoint: null   # my comment"))
    good = params.read_bytes()
    assert _run(capsys)[0] == 0
    assert (root / PARAMS_OK).read_bytes() == good
    edited = good.replace(b"  mu3:", b"  mu33: 1\n  mu3:")
    params.write_bytes(edited)
    status, err = _run(capsys)  # plain dvc repro: an error, the edit stays
    assert status == 2 and "loss.mu33" in err and params.read_bytes() == edited
    assert f"cp {PARAMS_OK} params.yaml" in err
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1")
    status, err = _run(capsys)
    assert status == 2 and "loss.mu33" in err
    assert params.read_bytes() == good
    assert (root / "params.yaml.rejected").read_bytes() == edited
    assert "params.yaml.rejected" in err


def test_psdif_check_reports_and_writes_nothing(project, capsys):
    from psdif.cli import main

    root, write = project
    write(synthetic__seed=-5)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "synthetic.seed=-5 must be >= 0" in err
    write(synthetic__seed=0, train__seeds=0)  # what `dvc exp run -S train.seeds=0` leaves (DVC fails first)
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "train.seeds=0 must be a list" in err and "-S 'train.seeds=[0]'" in err
    write(synthetic__seed=0, train__seeds=[0])
    assert main(["check"]) == 0
    assert not (root / "data").exists()


@pytest.mark.slow
def test_dvc_exp_run_with_a_refused_param_leaves_params_yaml_as_it_was(tmp_path):
    """A real `dvc exp run -S +loss.mu33=1` in a fresh copy of the project: the check stage refuses it and
    params.yaml is byte for byte the committed one (DVC had rewritten `checkpoint: null` as `checkpoint:`)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path / "psdif"
    copy_tracked(dest)
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    env.pop("DVC_EXP_NAME", None)

    def run(*cmd, check=True):
        r = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True, timeout=600)
        assert not check or r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
        return r

    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        run(*cmd)
    run(str(bin_dir / "dvc"), "repro", "--single-item", "check")  # the last params.yaml that passed
    before = (dest / "params.yaml").read_bytes()
    assert b"checkpoint: null" in before
    r = run(str(bin_dir / "dvc"), "exp", "run", "-S", "+loss.mu33=1", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "loss.mu33" in out, out[-3000:]
    assert "Running stage 'download'" not in out
    assert (dest / "params.yaml").read_bytes() == before
    assert b"mu33: 1" in (dest / "params.yaml.rejected").read_bytes()


def test_three_missing_files_are_one_message_with_their_sources(project, capsys):
    """Params naming three missing files: one run names all three (an error line each) and one message lists
    every file with where to get it (the paper's files: docs/paper_setting.md)."""
    root, write = project
    write(pseudolabel__checkpoint=str(root / "no" / "deeplab.pth"), model__encoder_weights=str(root / "no" / "hr.pth"),
          model__pose_weights=str(root / "no" / "r18.pth"))
    status, err = _run(capsys)
    assert status == 2 and len(_errors(err)) == 3
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if "3 file(s) named in params are missing" in line)
    message = "\n".join(lines[start:start + 4])
    for key, name, source in (
            ("pseudolabel.checkpoint", "best_deeplabv3plus_resnet101_cityscapes_os16.pth",
             "github.com/VainF/DeepLabV3Plus-Pytorch"),
            ("model.encoder_weights", "fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth",
             "https://download.openmmlab.com/mmsegmentation/v0.5/hrnet/"),
            ("model.pose_weights", "resnet18-f37072fd.pth",
             "https://download.pytorch.org/models/resnet18-f37072fd.pth")):
        [line] = [ln for ln in message.splitlines() if ln.startswith(f"  - {key}: ")]
        assert name in line and source in line, line
    assert "SHA-256 starts with 221e4a4f" in message and "SHA-256 starts with f37072fd" in message
