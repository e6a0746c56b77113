"""The pseudolabel stage on a tiny generated mini-KITTI: the teacher path gives the same labels bit for bit
whatever the process's random state, the oracle labeller writes the generator's exact semantic ground truth,
and a run killed while it writes a label resumes without relabelling."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from psdif.config import default_params, preset_path
from psdif.reports import read_report
from psdif.data import kitti
from psdif.data.images import read_image
from psdif.semantics.labels import label_path, predict_labels, read_label_png

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / "stages" / "pseudolabel.py"
TINY_SYNTHETIC = dict(image_width=128, image_height=64, train_drives=1, val_drives=1, test_drives=1,
                      frames_per_drive=8, test_frames_per_drive=2, supersample=1, make3d_images=0)
N_LABELS = 3 * 8 * 2  # drives x frames x cameras


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A mini-KITTI of three 8-frame drives (train, val, test) at 128 x 64."""
    from psdif.data.synthetic import generate_mini_kitti

    root = tmp_path_factory.mktemp("generated")
    cfg = dataclasses.replace(default_params().synthetic, **TINY_SYNTHETIC)
    generate_mini_kitti(cfg, root / "kitti_raw", root / "splits", progress=False)
    return root


def _params(folder: Path, generated: Path, **pseudolabel) -> Path:
    raw = yaml.safe_load(preset_path("embedded").read_text())
    raw["data"].update(raw_root=str(generated / "kitti_raw"), splits_dir=str(generated / "splits"), height=64,
                       width=64)
    raw["synthetic"].update(TINY_SYNTHETIC)
    raw["pseudolabel"].update(teacher_steps=2, teacher_batch_size=2, teacher_height=64, teacher_width=64,
                              batch_size=4, **pseudolabel)
    raw["train"]["batch_size"] = 2
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _stage():
    spec = importlib.util.spec_from_file_location("pseudolabel_stage", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_in(folder: Path, params: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    _stage().main(["--params", str(params)])


def _labels(folder: Path) -> dict[str, bytes]:
    root = folder / "data" / "pseudolabels"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def _gt(generated: Path, rel: str) -> np.ndarray:
    """The generator's semantic GT of a label path ``<date>/<drive>/image_0C/data/N.png``."""
    date, drive, cam, _, name = Path(rel).parts
    return read_label_png(generated / "kitti_raw" / "synthetic_gt" / drive / f"semantic_{cam[-2:]}" / name)


def test_teacher_labels_are_identical_bit_for_bit_across_runs(generated, tmp_path, monkeypatch):
    """Two runs with the same params, each after disturbing every global RNG differently: same PNG bytes."""
    runs = []
    for i, name in enumerate(("first", "second")):
        torch.manual_seed(1000 + i)  # what earlier work in the process leaves behind
        np.random.seed(2000 + i)
        random.seed(3000 + i)
        torch.rand(7 + i)
        folder = tmp_path / name
        _run_in(folder, _params(folder, generated), monkeypatch)
        runs.append(_labels(folder))
    assert len(runs[0]) == N_LABELS
    assert runs[0].keys() == runs[1].keys()
    differ = [k for k in runs[0] if runs[0][k] != runs[1][k]]
    assert not differ, f"{len(differ)} of {N_LABELS} labels differ between identical runs, e.g. {differ[0]}"
    a = torch.load(tmp_path / "first/data/teacher/teacher.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "second/data/teacher/teacher.pt", weights_only=True)["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_labels_are_the_saved_teachers_argmax(generated, tmp_path, monkeypatch):
    from psdif.semantics.teacher import load_teacher

    folder = tmp_path / "run"
    _run_in(folder, _params(folder, generated), monkeypatch)
    teacher = load_teacher(folder / "data/teacher/teacher.pt")
    test = kitti.read_split(generated / "splits" / "synth_eigen" / "test_files.txt")
    assert test
    images = np.stack([read_image(kitti.image_path(generated / "kitti_raw", f)) for f in test])
    for f, expected in zip(test, predict_labels(teacher, images)):
        stored = read_label_png(label_path(folder / "data/pseudolabels", f.folder, f.side, f.frame))
        np.testing.assert_array_equal(stored, expected)


def test_oracle_labeller_writes_the_generators_ground_truth(generated, tmp_path, monkeypatch):
    folder = tmp_path / "oracle"
    _run_in(folder, _params(folder, generated, labeller="oracle"), monkeypatch)
    labels = _labels(folder)
    assert len(labels) == N_LABELS
    for rel in labels:
        stored = read_label_png(folder / "data" / "pseudolabels" / rel)
        gt = _gt(generated, rel)
        np.testing.assert_array_equal(stored, gt)
        assert len(np.unique(gt)) >= 3  # several classes in every frame: B_t is never empty
    assert not (folder / "data/teacher/teacher.pt").exists()  # no teacher trained
    report = read_report(folder / "metrics/pseudolabel.json")
    assert report["labeller"] == "oracle" and report["oracle_heldout"]["miou"] == 1.0


KILLER = """
import os, runpy, signal, sys
from pathlib import Path

real, written = Path.write_bytes, [0]

def write_bytes(self, data):  # SIGKILL in the middle of writing the KILL_AT-th label PNG
    if ".png." in self.name:
        written[0] += 1
        if written[0] == int(os.environ["KILL_AT"]):
            real(self, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, data)

Path.write_bytes = write_bytes
sys.argv = [sys.argv[1], "--params", sys.argv[2]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("labeller", ["teacher", "oracle"])
def test_stage_killed_while_writing_a_label_resumes_without_relabelling(generated, tmp_path, monkeypatch,
                                                                         labeller):
    """SIGKILL half-way through the 10th PNG: 9 complete labels and one temporary file remain; the rerun
    removes the temporary, keeps the 9 (untouched), writes the rest and reuses the trained teacher."""
    folder = tmp_path / "killed"
    params = _params(folder, generated, labeller=labeller)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CI": "1", "KILL_AT": "10"}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(STAGE), str(params)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    root = folder / "data" / "pseudolabels"
    done = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert len(done) == 9
    assert len([p for p in root.rglob("*") if p.name.endswith(".tmp")]) == 1  # the half-written one
    for p in done:
        read_label_png(p)  # complete files only
    monkeypatch.chdir(folder)
    out = subprocess.run([sys.executable, str(STAGE), "--params", str(params)], cwd=folder, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert len(after) == N_LABELS
    assert all(after[p] == t for p, t in done.items()), "finished labels were written again"
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
    assert "teacher:" not in out.stdout  # the teacher trained before the kill was reused (or none needed)


def test_rerun_relabels_a_missing_label_and_one_replaced_by_another_frames(generated, tmp_path, monkeypatch,
                                                                            capsys):
    """Labels kept from the last run are checked against its manifest: a deleted one and one overwritten with
    another frame's PNG are labelled again (the bytes of the first run come back), the others are untouched,
    the count is printed and the manifest is the same bytes as before."""
    folder = tmp_path / "verify"
    params = _params(folder, generated, labeller="oracle")
    _run_in(folder, params, monkeypatch)
    first = _labels(folder)
    manifest = (folder / "data/manifests/pseudolabels.json").read_bytes()
    root = folder / "data" / "pseudolabels"
    names = sorted(first)
    gone, replaced, donor = names[0], names[5], names[6]
    assert first[replaced] != first[donor]
    (root / gone).unlink()
    (root / replaced).write_bytes(first[donor])
    stamps = {n: (root / n).stat().st_mtime_ns for n in names if n not in (gone, replaced)}
    capsys.readouterr()
    _run_in(folder, params, monkeypatch)
    out = capsys.readouterr().out
    assert (f"pseudolabel: {N_LABELS - 2} labels kept, 1 missing and 1 changed since the manifest: relabelling 2"
            in out), out
    assert _labels(folder) == first
    assert all((root / n).stat().st_mtime_ns == t for n, t in stamps.items())
    assert (folder / "data/manifests/pseudolabels.json").read_bytes() == manifest


def test_an_unreadable_checkpoint_is_refused_before_any_label_is_deleted(generated, tmp_path, monkeypatch, capsys):
    """Run on its own (``dvc repro -s pseudolabel`` skips the check stage), the stage loads
    ``pseudolabel.checkpoint`` before it touches data/pseudolabels: random bytes there cost no existing label."""
    _run_in(tmp_path, _params(tmp_path, generated, labeller="oracle"), monkeypatch)
    before = _labels(tmp_path)
    assert len(before) == N_LABELS
    bad = tmp_path / "random.pth"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SystemExit) as exc:
        _run_in(tmp_path, _params(tmp_path, generated, labeller="teacher", checkpoint=str(bad)), monkeypatch)
    assert "pseudolabel.checkpoint" in str(exc.value) and str(bad) in str(exc.value)
    assert _labels(tmp_path) == before
