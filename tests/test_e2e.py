"""End to end: `dvc repro` on a tiny configuration in a temporary git repo, then exp run -> metrics diff,
a misspelled -S key, and a queued experiment. Slow (minutes); runs in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from psdif.data.images import read_image
from psdif.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

TINY = {
    "data": {"height": 64, "width": 96},
    "synthetic": {"image_width": 192, "image_height": 64, "train_drives": 1, "val_drives": 1, "test_drives": 1,
                  "frames_per_drive": 32, "test_frames_per_drive": 4, "supersample": 1, "make3d_images": 2},
    "pseudolabel": {"teacher_steps": 4, "teacher_batch_size": 2, "teacher_height": 64, "teacher_width": 96},
    "pretrain": {"steps": 2, "batch_size": 2, "checkpoint_every": 1},
    "train": {"epochs": 1, "max_steps": 3, "batch_size": 2, "checkpoint_every": 2, "log_every": 1},
    "eval": {"batch_size": 4, "figure_frames": [0, 1]},
}


def _env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1", CI="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("PSDIF_NPROC", None)
    return env


def _run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the tracked files in a fresh git repo, with a tiny params.yaml, reproduced once."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("e2e") / "psdif"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith(("data/", "metrics/", "models/", "dvclive/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    params = _merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny"], dest)
    _run([str(BIN / "dvc"), "repro"], dest, timeout=1500)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "baseline run"], dest)
    return dest


def test_repro_writes_every_metric_table_and_figure(project):
    for name in (*VARIANTS, "flat", "untrained"):
        metrics = json.loads((project / "metrics/eval" / f"{name}.json").read_text())
        assert {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "ratio_median", "ratio_std",
                "n_images"} <= set(metrics)
        assert metrics["n_images"] == 4 and 0 < metrics["abs_rel"] < 10
        assert set(metrics["make3d"]) >= {"abs_rel", "sq_rel", "rmse", "rmse_log"}
    for t in (1, 2, 3):
        md = (project / "metrics/tables" / f"table{t}.md").read_text()
        assert "this run" in md and md.count("|") > 20
        assert (project / "metrics/tables" / f"table{t}.csv").exists()
    for fig in ("boundary_fig4", "fig6_qualitative", "fig5_inconsistency"):
        assert (project / "metrics/figures" / f"{fig}.png").stat().st_size > 1000
    assert json.loads((project / "metrics/filter.json").read_text())["static_exact_match"] is True
    shown = _run([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout
    for name in VARIANTS:
        assert f"metrics/eval/{name}.json" in shown
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], project).stdout)
    assert set(status) == {"check", "download"}, status  # they run on every repro; everything else is up to date
    assert all(changes == ["always changed"] for changes in status.values()), status


def test_exp_run_retrains_only_full_and_metrics_diff_shows_it(project):
    r = _run([str(BIN / "dvc"), "exp", "run", "-S", "loss.mu3=0.05"], project, timeout=900)
    ran = {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}
    assert "train_full" in ran and "evaluate_full" in ran
    assert not ran & {"train_baseline", "train_msfan", "train_msfan_seg", "train_msfan_seg_psdifm", "filter",
                      "pseudolabel", "boundary", "pretrain", "export_gt"}, ran
    diff = _run([str(BIN / "dvc"), "params", "diff"], project).stdout
    assert "loss.mu3" in diff and "0.05" in diff
    mdiff = _run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], project).stdout
    assert "metrics/eval/full.json" in json.loads(mdiff)
    show = _run([str(BIN / "dvc"), "exp", "show", "--csv"], project).stdout
    assert "abs_rel" in show and "loss.mu3" in show


def test_misspelled_set_param_fails_naming_the_key(project):
    r = _run([str(BIN / "dvc"), "exp", "run", "-S", "loss.mu33=0.05"], project, check=False)
    assert r.returncode != 0
    assert "loss.mu33" in r.stdout + r.stderr


def test_queued_experiment_runs(project):
    # queued runs happen in a temporary copy of the repo: the generated data (git-ignored) travels with -C
    _run([str(BIN / "dvc"), "exp", "run", "--queue", "-C", "data", "-S", "loss.mu3=0.01"], project)
    _run([str(BIN / "dvc"), "queue", "start"], project)
    _run([str(BIN / "dvc"), "queue", "logs", "--follow", _queued_name(project)], project, check=False,
         timeout=900)
    for _ in range(120):
        status = _run([str(BIN / "dvc"), "queue", "status"], project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        import time
        time.sleep(5)
    assert "Success" in status, status
    show = _run([str(BIN / "dvc"), "exp", "show", "--csv"], project).stdout
    assert "0.01" in show


def _queued_name(project: Path) -> str:
    status = _run([str(BIN / "dvc"), "queue", "status"], project).stdout.splitlines()
    for line in status[1:]:
        parts = line.split()
        if parts:
            return parts[0]
    return ""


def test_pseudolabel_stage_killed_midway_resumes_without_relabelling(project):
    """SIGKILL the pseudolabel stage while it labels; no PNG is truncated, the rerun keeps finished ones."""
    import signal
    import time

    from PIL import Image

    labels = project / "data" / "pseudolabels"
    shutil.rmtree(labels)
    proc = subprocess.Popen([sys.executable, "stages/pseudolabel.py"], cwd=project, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(labels.rglob("*.png")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in labels.rglob("*.png")}
    total = 3 * 32 * 2  # drives x frames x cameras of the tiny configuration
    assert 1 <= len(done) < total, f"killed after {len(done)} of {total} labels"
    for p in done:  # every file present decodes completely: atomic writes, no half PNG
        with Image.open(p) as im:
            im.load()
    r = _run([sys.executable, "stages/pseudolabel.py"], project)
    after = {p: p.stat().st_mtime_ns for p in labels.rglob("*.png")}
    assert len(after) == total
    assert all(after[p] == t for p, t in done.items()), "finished labels were written again"
    assert not [p for p in labels.rglob("*") if p.name.endswith(".tmp")]
    assert "teacher:" not in r.stdout  # the trained teacher was reused, not retrained


def test_pseudolabels_equal_the_teachers_argmax(project):
    import numpy as np

    from psdif.data import kitti
    from psdif.semantics.labels import label_path, predict_labels, read_label_png
    from psdif.semantics.teacher import load_teacher

    teacher = load_teacher(project / "data" / "teacher" / "teacher.pt")
    test = kitti.read_split(project / "data" / "splits" / "synth_eigen" / "test_files.txt")[:3]
    images = np.stack([read_image(kitti.image_path(project / "data" / "kitti_raw", f)) for f in test])
    expected = predict_labels(teacher, images)
    for f, exp in zip(test, expected):
        stored = read_label_png(label_path(project / "data" / "pseudolabels", f.folder, f.side, f.frame))
        np.testing.assert_array_equal(stored, exp)
