"""The headline metrics file and the plot data: keys, values from the per-variant files, curves averaged
over seeds, and dvc.yaml's plots drawing exactly the columns the summary stage writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from psdif import pipeline
from psdif.evaluation.seeds import aggregate
from psdif.evaluation.summary import (HEADLINE_KITTI, SHORT, _round, final_train_loss, headline, mean_curve,
                                      write_bars, write_curves, write_headline)
from psdif.paths import PLOT_DATA, SUMMARY
from psdif.variants import CURVE_TERMS, VARIANTS

REPO = Path(__file__).resolve().parents[1]


def _eval(abs_rel: float) -> dict:
    return {"abs_rel": abs_rel, "sq_rel": 10 * abs_rel, "rmse": 40 * abs_rel, "rmse_log": abs_rel, "a1": 1 - abs_rel,
            "a2": 0.9, "a3": 0.95, "ratio_median": 30.0, "ratio_std": 0.1, "n_images": 80,
            "make3d": {"abs_rel": 2 * abs_rel, "sq_rel": 1.0, "rmse": 5.0, "rmse_log": 0.2, "n_images": 24}}


def _live(root: Path, term_values: dict[str, list[float]]) -> Path:
    """A DVCLive folder as psdif.train writes it: plots/metrics/train/<term>.tsv, steps 10, 20, ..."""
    folder = root / "plots" / "metrics" / "train"
    folder.mkdir(parents=True)
    for term, values in term_values.items():
        rows = [f"step\t{term}"] + [f"{10 * (i + 1)}\t{v}" for i, v in enumerate(values)]
        (folder / f"{term}.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_headline_keys_and_values_one_seed(tmp_path):
    for i, name in enumerate(VARIANTS):
        (tmp_path / f"{name}.json").write_text(json.dumps(aggregate({0: _eval(0.3 - 0.01 * i)})))
    out = headline(tmp_path)
    assert list(out) == ["base", "msfan", "seg", "psdifm", "full"]
    assert [SHORT[v] for v in VARIANTS] == list(out)
    for row in out.values():
        assert set(row) == {*HEADLINE_KITTI, "m3d_abs_rel"}  # no spread with one seed
    assert out["full"] == {"abs_rel": 0.26, "sq_rel": 2.6, "rmse": 10.4, "a1": 0.74, "m3d_abs_rel": 0.52}
    assert out["base"]["abs_rel"] == 0.3


def test_headline_with_seeds_adds_the_spread(tmp_path):
    for name in VARIANTS:
        (tmp_path / f"{name}.json").write_text(json.dumps(aggregate({0: _eval(0.2), 1: _eval(0.3), 2: _eval(0.4)})))
    out = headline(tmp_path)
    assert out["full"]["abs_rel"] == 0.3 and out["full"]["std"]["abs_rel"] == 0.1
    assert set(out["full"]["std"]) == {*HEADLINE_KITTI, "m3d_abs_rel"}
    assert out["full"]["std"]["m3d_abs_rel"] == 0.2


def test_headline_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ValueError, match=r"baseline.json is missing; run `dvc repro`"):
        headline(tmp_path)
    (tmp_path / "baseline.json").write_text("{")
    with pytest.raises(ValueError, match=r"baseline.json: malformed JSON"):
        headline(tmp_path, ["baseline"])


def test_curves_are_the_mean_over_seeds_per_variant(tmp_path):
    lives = {
        "baseline": [_live(tmp_path / "b0", {"total": [1.0, 0.5], "photometric": [0.9, 0.4]}),
                     _live(tmp_path / "b1", {"total": [3.0, 1.5], "photometric": [0.7, 0.2]})],
        "full": [_live(tmp_path / "f0", {"total": [2.0, 1.0, 0.7], "metric": [0.4, 0.3, 0.2]})],
    }
    written = write_curves(lives, tmp_path / "plots")
    assert sorted(p.name for p in written) == sorted(f"train_{t}.csv" for t in CURVE_TERMS)
    total = list(csv.reader((tmp_path / "plots" / "train_total.csv").open()))
    assert total == [["step", "baseline", "full"], ["10", "2.0", "2.0"], ["20", "1.0", "1.0"], ["30", "", "0.7"]]
    metric = list(csv.reader((tmp_path / "plots" / "train_metric.csv").open()))
    assert metric[0] == ["step", "full"] and metric[1] == ["10", "0.4"]
    assert list(csv.reader((tmp_path / "plots" / "train_ce.csv").open())) == [["step"]]
    assert mean_curve([{10: 1.0, 20: 2.0}, {10: 3.0}]) == {10: 2.0}  # only steps every seed logged


def test_bars_keep_table3_order_and_variant_names(tmp_path):
    summary = {"base": {"abs_rel": 0.3}, "msfan": {"abs_rel": 0.29, "std": {"abs_rel": 0.01}},
               "seg": {"abs_rel": 0.28}, "psdifm": {"abs_rel": 0.27}, "full": {"abs_rel": 0.26}}
    rows = list(csv.reader(write_bars(summary, tmp_path).open()))
    assert rows[0] == ["variant", "abs_rel", "abs_rel_std"]
    assert [r[0] for r in rows[1:]] == list(VARIANTS)
    assert rows[2] == ["msfan", "0.29", "0.01"]


def test_top_level_plots_draw_the_columns_the_summary_stage_writes(tmp_path):
    """Every plot names a file under metrics/plots and fields that write_curves / write_bars produce for a run
    of every variant, with a title and both axis titles; the bar template ships in .dvc/plots."""
    lives = {}
    for name, v in VARIANTS.items():
        terms = {"total": [1.0], "photometric": [1.0], "smoothness": [1.0]}
        terms.update({"ce": [1.0]} if v.seg else {})
        terms.update({"metric": [1.0]} if v.metric_loss else {})
        lives[name] = [_live(tmp_path / "live" / name, terms)]
    out = tmp_path / "plots"
    write_curves(lives, out)
    write_bars({SHORT[n]: {"abs_rel": 0.2} for n in VARIANTS}, out)
    built = pipeline.build()
    plots = built["plots"]
    assert {next(iter(p)) for p in plots} == {f"train_{t}" for t in CURVE_TERMS} | {"abs_rel"}
    for entry in plots:
        (name, spec), = entry.items()
        assert spec["title"] and spec["x_label"] and spec["y_label"], name
        (path, fields), = spec["y"].items()
        assert path.startswith(PLOT_DATA + "/"), name
        header = next(csv.reader((out / Path(path).name).open()))
        fields = [fields] if isinstance(fields, str) else fields
        assert fields and set(fields) | {spec["x"]} <= set(header), (name, fields, header)
        template = spec["template"]
        assert (REPO / ".dvc" / "plots" / f"{template}.json").is_file(), template
    # the summary stage writes the plot data and the headline, and is listed first (exp show leads with it)
    stages = built["stages"]
    assert next(iter(stages)) == "summary"
    assert {next(iter(o)) for o in stages["summary"]["outs"]} == {PLOT_DATA}
    assert [next(iter(m)) for m in stages["summary"]["metrics"]] == [SUMMARY]


def test_train_stages_can_enter_dvcs_run_cache():
    """DVC saves a stage to its run-cache only if every uncached output is a metric or a plot and none is
    persistent (dvc/stage/__init__.py run(), dvc/stage/cache.py _can_hash): checked with DVC's own output
    objects on the generated train stages. The model stays cached; the run's logs are metrics / plots."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        for name in VARIANTS:
            stage = repo.stage.collect(f"train_{name}@0")[0]
            outs = {str(o.def_path): o for o in stage.outs}
            assert outs[f"models/{name}/seed0/model.pt"].use_cache
            assert all(o.use_cache or o.is_metric or o.is_plot for o in stage.outs), outs
            assert not any(o.persist for o in stage.outs), outs
            assert {p for p, o in outs.items() if o.is_metric} == {f"metrics/train/{name}/seed0.json",
                                                                 f"dvclive/{name}/seed0/metrics.json"}
            assert {p for p, o in outs.items() if o.is_plot} == {f"dvclive/{name}/seed0/plots"}
            props = outs[f"dvclive/{name}/seed0/plots"].plot
            assert props["x"] == "step" and props["x_label"] and props["y_label"]  # titled axes (plots_check)


def test_final_train_loss_is_the_mean_over_seeds_of_the_last_logged_total(tmp_path):
    seeds = [_live(tmp_path / "a", {"total": [3.0, 2.0, 1.5], "photometric": [9.0]}),
             _live(tmp_path / "b", {"total": [4.0, 0.5]})]
    assert final_train_loss(seeds) == pytest.approx((1.5 + 0.5) / 2)
    assert final_train_loss([tmp_path / "missing"]) is None


def test_summary_json_holds_each_variants_final_training_loss(tmp_path):
    evals, lives = tmp_path / "eval", {}
    evals.mkdir()
    for i, name in enumerate(VARIANTS):
        (evals / f"{name}.json").write_text(json.dumps(aggregate({0: _eval(0.25)})))
        finals = [1.0 + i, 2.0 + i]  # the last total loss of seed 0 and seed 1
        lives[name] = [_live(tmp_path / "live" / name / f"seed{s}", {"total": [10.0, final]})
                       for s, final in enumerate(finals)]
    data = write_headline(evals, tmp_path / "summary.json", live_dirs=lives)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == data
    for i, name in enumerate(VARIANTS):
        assert written[SHORT[name]]["train_loss"] == pytest.approx(1.5 + i)
        assert set(written[SHORT[name]]) == {*HEADLINE_KITTI, "m3d_abs_rel", "train_loss"}


def test_headline_without_make3d_has_no_m3d_key(tmp_path):
    for name in VARIANTS:
        e = _eval(0.25)
        e["make3d"] = {"not_run": "eval.make3d_root is null"}
        (tmp_path / f"{name}.json").write_text(json.dumps(aggregate({0: e})))
    assert all(set(row) == set(HEADLINE_KITTI) for row in headline(tmp_path).values())


def test_headline_takes_one_boundary_figure_from_dense_gt_results(tmp_path):
    """dbe_acc (mean over seeds, std beside it) is the only boundary figure in the headline; a file without a
    ``boundary`` group (sparse GT, real KITTI) adds no key."""
    def run(dbe):
        return {**_eval(0.25), "boundary": {"dbe_acc": dbe, "dbe_comp": 9.0, "band_abs_rel": 0.4,
                                             "per_class": {"road": {"abs_rel": 0.1, "a1": 0.9}}}}

    for name in VARIANTS:
        (tmp_path / f"{name}.json").write_text(json.dumps(aggregate({0: run(2.0), 1: run(3.0)})))
    (tmp_path / "baseline.json").write_text(json.dumps(aggregate({0: _eval(0.3)})))
    out = headline(tmp_path)
    assert set(out["full"]) == {*HEADLINE_KITTI, "m3d_abs_rel", "dbe_acc", "std"}
    assert out["full"]["dbe_acc"] == 2.5 and out["full"]["std"]["dbe_acc"] == _round(0.5 ** 0.5)
    assert "dbe_acc" not in out["base"]
