"""End to end: `dvc repro` on a tiny configuration in a temporary git repo, then exp run -> metrics diff,
a misspelled -S key, a queued experiment, the README's `dvc exp show` view of the two experiments, and
three training seeds. Slow (minutes); runs in CI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from psdif.reports import read_report
from psdif.evaluation.summary import HEADLINE_KITTI, SHORT
from psdif.variants import VARIANTS
from tests.project import copy_tracked

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

# The oracle labeller (the generator's exact semantic GT) makes every loss term the tests exercise non-zero by
# construction: every frame holds several classes, so B_t and the metric loss are never empty, whatever the
# seed (a 4-step teacher once labelled 99.99 % of pixels "building"; then L_metric was 0 and
# `dvc exp run -S loss.mu3=0.05` changed nothing). The teacher path has its own tests (test_pseudolabel.py).
TINY = {
    "data": {"height": 64, "width": 96},
    "synthetic": {"image_width": 192, "image_height": 64, "train_drives": 1, "val_drives": 1, "test_drives": 1,
                  "frames_per_drive": 32, "test_frames_per_drive": 4, "supersample": 1, "make3d_images": 2},
    "pseudolabel": {"labeller": "oracle", "teacher_steps": 4, "teacher_batch_size": 2, "teacher_height": 64,
                    "teacher_width": 96},
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
    copy_tracked(dest, keep_lock=True)
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


def test_every_metrics_file_dvc_shows_holds_numbers_only(project):
    """`dvc metrics show`: every declared metrics file of the tiny run, leaf by leaf, is a number (labels, lists
    and flags are in the <name>.about.json beside it); the eval files keep the keys outside checks read."""
    from tests.test_reports import non_numbers

    shown = json.loads(_run([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout)
    files = {path: entry["data"] for rev in shown.values() for path, entry in rev["data"].items()}
    assert "metrics/eval/full.json" in files and "metrics/coverage.json" in files
    for path, data in files.items():
        assert non_numbers(data) == [], path
    full = json.loads((project / "metrics/eval/full.json").read_text())
    assert {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "ratio_median", "ratio_std",
            "n_images"} <= set(full)
    assert read_report(project / "metrics/eval/full.json")["test_split"] == "synth_eigen"


def test_every_loss_term_of_the_full_model_is_non_zero(project):
    """What `-S loss.mu3=...` acts on must exist: boundary pixels, a metric loss, CE, photometric error."""
    train = json.loads((project / "metrics/train/full/seed0.json").read_text())
    for term in ("loss_photometric", "loss_smoothness", "loss_ce", "loss_metric", "loss_n_boundary_gt"):
        assert train[term] > 0, (term, train)
    labels = read_report(project / "metrics/pseudolabel.json")          # numbers and labels together
    assert labels["labeller"] == "oracle" and labels["oracle_heldout"]["miou"] == 1.0


def _ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")}


def test_repro_writes_the_headline_metrics_and_plot_data(project):
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert list(summary) == [SHORT[v] for v in VARIANTS] == ["base", "msfan", "seg", "psdifm", "full"]
    for name, row in summary.items():
        assert set(row) == {*HEADLINE_KITTI, "m3d_abs_rel", "dbe_acc", "train_loss"}, (name, row)  # one seed
    for variant in VARIANTS:  # the final training loss: the last row of the run's DVCLive log (one seed)
        last = (project / "dvclive" / variant / "seed0/plots/metrics/train/total.tsv").read_text().splitlines()[-1]
        assert summary[SHORT[variant]]["train_loss"] == pytest.approx(float(last.split("\t")[1]), rel=1e-4)
    full = json.loads((project / "metrics/eval/full.json").read_text())
    assert summary["full"]["abs_rel"] == pytest.approx(full["abs_rel"], rel=1e-4)
    assert summary["full"]["m3d_abs_rel"] == pytest.approx(full["make3d"]["abs_rel"], rel=1e-4)
    # generated data: boundary metrics against the dense GT, one of them in the headline
    assert summary["full"]["dbe_acc"] == pytest.approx(full["boundary"]["dbe_acc"], rel=1e-4)
    assert 0 <= full["boundary"]["dbe_acc"] <= 10 and "road" in full["boundary"]["per_class"]
    header = (project / "metrics/plots/train_total.csv").read_text().splitlines()[0]
    assert header == "step," + ",".join(VARIANTS)
    # dvc exp show lists the headline first (the summary stage is first in dvc.yaml)
    cols = _run([str(BIN / "dvc"), "exp", "show", "--csv"], project).stdout.splitlines()[0].split(",")
    metrics = [c for c in cols if c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")]
    assert metrics[0] == "base.abs_rel", metrics[:5]


def test_exp_run_retrains_only_full_and_metrics_diff_shows_it(project):
    before = json.loads((project / "metrics/train/full/seed0.json").read_text())
    r = _run([str(BIN / "dvc"), "exp", "run", "-S", "loss.mu3=0.05"], project, timeout=900)
    ran = _ran(r.stdout)
    assert {"train_full@0", "evaluate_full", "summary", "tables"} <= ran, ran
    assert not ran & {"train_baseline@0", "train_msfan@0", "train_msfan_seg@0", "train_msfan_seg_psdifm@0", "filter",
                      "pseudolabel", "boundary", "pretrain", "export_gt", "evaluate_baseline"}, ran
    diff = _run([str(BIN / "dvc"), "params", "diff"], project).stdout
    assert "loss.mu3" in diff and "0.05" in diff
    mdiff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], project).stdout)
    assert "metrics/eval/full.json" in mdiff and "metrics/summary.json" in mdiff
    after = json.loads((project / "metrics/train/full/seed0.json").read_text())
    assert before["loss_total"] != after["loss_total"]  # mu3 changed the objective (L_metric > 0)
    # the README's headline diff: only the headline, only the full model moved
    headline = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--targets", "metrics/summary.json", "--json"],
                               project).stdout)
    assert set(headline) == {"metrics/summary.json"}, headline
    moved = headline["metrics/summary.json"]
    assert moved and all(key.startswith("full.") for key in moved), moved


def _outputs(project: Path) -> dict[str, bytes]:
    """Every file under metrics/, models/ and dvclive/ (the per-run logs), by path."""
    return {str(p.relative_to(project)): p.read_bytes() for top in ("metrics", "models", "dvclive")
            for p in sorted((project / top).rglob("*")) if p.is_file()}


def test_going_back_to_earlier_params_trains_nothing_and_restores_every_output(project):
    """DVC's run-cache holds the train stages (their logs are metrics / plots): after an experiment on
    loss.mu3, putting the earlier params.yaml back makes `dvc repro` restore model.pt and the logs of
    train_full@0 instead of training, and every metrics file, model and log is byte-identical to before."""
    # the runs' DVCLive curves are plots of their stage: drawn with titled axes, no errors
    plots = json.loads(_run([str(BIN / "dvc"), "plots", "show", "--json"], project).stdout)
    assert not plots.get("errors"), plots.get("errors")
    (curve,) = plots["data"]["dvclive/full/seed0/plots/metrics/train/total.tsv"]
    assert curve["content"]["encoding"]["x"]["title"] and curve["content"]["encoding"]["y"]["title"], curve
    params = (project / "params.yaml").read_text()
    mu3 = yaml.safe_load(params)["loss"]["mu3"]
    before = _outputs(project)
    r = _run([str(BIN / "dvc"), "exp", "run", "-S", f"loss.mu3={mu3 + 0.03:g}"], project, timeout=900)
    assert "train_full@0" in _ran(r.stdout)
    # the README's view of the experiment: the param and the headline of `full` (now with its training
    # loss); the per-run logs' columns carry their path and are dropped
    shown = _run([str(BIN / "dvc"), *EXP_SHOW, "--csv"], project).stdout.splitlines()
    cols = [c for c in shown[0].split(",") if c not in ("Experiment", "rev", "typ", "Created", "parent", "State",
                                                         "Executor")]
    assert "loss.mu3" in cols and "full.train_loss" in cols, cols
    assert all(c == "loss.mu3" or c.startswith("full.") for c in cols), cols
    every = _run([str(BIN / "dvc"), "exp", "show", "--csv"], project).stdout.splitlines()[0].split(",")
    assert any(c.startswith("metrics/train/full/seed0.json:") for c in every), every
    assert _outputs(project) != before

    (project / "params.yaml").write_text(params)
    r = _run([str(BIN / "dvc"), "repro"], project, timeout=900)
    assert not {s for s in _ran(r.stdout) if s.startswith("train_")}, r.stdout
    assert "Stage 'train_full@0' is cached - skipping run, checking out outputs" in r.stdout, r.stdout
    after = _outputs(project)
    assert after.keys() == before.keys()
    assert [p for p in before if after[p] != before[p]] == []


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


# the README's command (section "Ablations and experiments"): what moved between experiments, nothing else
EXP_SHOW = ["exp", "show", "--only-changed", "--drop", ".*/"]


def test_readme_exp_show_of_two_experiments_shows_the_param_and_what_moved(project):
    """After the two experiments above (loss.mu3 = 0.05 in the workspace, 0.01 queued), the documented view
    has the Experiment and Created columns, loss.mu3 and the headline figures of `full`, nothing else, and
    fits a 200-column terminal without a cut cell."""
    readme = (REPO / "README.md").read_text()
    assert "dvc " + " ".join(a if a != ".*/" else "'.*/'" for a in EXP_SHOW) in readme
    shown = _run([str(BIN / "dvc"), *EXP_SHOW, "--csv"], project).stdout.splitlines()
    cols = shown[0].split(",")
    assert len(shown) >= 4  # workspace, the baseline commit, two experiments
    rest = [c for c in cols if c not in ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")]
    assert "loss.mu3" in rest and "full.abs_rel" in rest, cols
    assert all(c == "loss.mu3" or c.startswith("full.") for c in rest), cols
    assert len(cols) <= 25
    table = subprocess.run([str(BIN / "dvc"), *EXP_SHOW, "--no-pager"], cwd=project, capture_output=True, text=True,
                           env={**_env(), "COLUMNS": "200"}, check=True).stdout
    assert "loss.mu3" in table and "full.abs_rel" in table and "…" not in table, table
    assert max(len(line) for line in table.splitlines()) <= 200


def test_three_seeds_add_runs_and_tables_show_spread_and_tests(project):
    """`-S 'train.seeds=[0,1,2]'` adds train_<variant>@1 and @2 and keeps the seed-0 runs; the per-variant
    files keep their keys (now means) and add the spread; Table 3 shows mean ± std and the paired tests."""
    r = _run([str(BIN / "dvc"), "exp", "run", "-S", "train.seeds=[0,1,2]"], project, timeout=1800)
    ran = _ran(r.stdout)
    assert {f"train_{v}@{s}" for v in VARIANTS for s in (1, 2)} <= ran, ran
    assert not {f"train_{v}@0" for v in VARIANTS} & ran, ran
    for name in VARIANTS:
        metrics = json.loads((project / "metrics/eval" / f"{name}.json").read_text())
        assert {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "ratio_median", "ratio_std",
                "n_images"} <= set(metrics)
        assert metrics["n_seeds"] == 3 and set(metrics["per_seed"]) == {"seed0", "seed1", "seed2"}
        mean = sum(e["abs_rel"] for e in metrics["per_seed"].values()) / 3
        assert metrics["abs_rel"] == pytest.approx(mean) and metrics["std"]["abs_rel"] >= 0
        assert (project / "models" / name / "seed2" / "model.pt").is_file()
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary["full"]["std"]) == {*HEADLINE_KITTI, "m3d_abs_rel", "dbe_acc"}
    table3 = (project / "metrics/tables/table3.md").read_text()
    assert "±" in table3 and "paired t-test over training seeds" in table3 and "n=3" in table3
    for name in ("flat", "untrained"):
        assert "n_images" in json.loads((project / "metrics/eval" / f"{name}.json").read_text())
    # the README's seeds view: the abs_rel mean of every row and the param, readable at 200 columns
    drop = r".*/|Created|.*\.std\.|.*\.(sq_rel|rmse|a1|m3d_abs_rel|dbe_acc|train_loss)$"
    assert f"dvc exp show --only-changed --drop '{drop}'" in (REPO / "README.md").read_text()
    table = subprocess.run([str(BIN / "dvc"), "exp", "show", "--only-changed", "--drop", drop, "--no-pager"],
                           cwd=project, capture_output=True, text=True, env={**_env(), "COLUMNS": "200"},
                           check=True).stdout
    assert "train.seeds" in table and "psdifm.abs_rel" in table and "…" not in table, table


def test_plots_render_with_titled_axes_in_headless_chromium(project, tmp_path):
    """bench/plots_check.py: `dvc plots show` in a real browser; every plot draws, every axis is titled."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plots_check", REPO / "bench" / "plots_check.py")
    plots_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots_check)
    if plots_check.find_browser() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    try:
        plots_check.vega_scripts()
    except plots_check.MissingTool as exc:
        pytest.skip(f"Vega scripts unavailable offline: {exc}")
    failures = plots_check.check(project, tmp_path / "check")
    assert failures == []
    html = (tmp_path / "check" / "index.html").read_text()
    for plot in ("train_total", "train_photometric", "train_smoothness", "train_ce", "train_metric", "abs_rel"):
        assert f'id = "{plot}"' in html or f'id="{plot}"' in html, plot
    assert (tmp_path / "check" / "screenshot.png").stat().st_size > 10_000
