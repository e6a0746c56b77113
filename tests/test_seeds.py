"""Several training seeds: the per-variant file folds them (hand-computed mean and std), the paired test
matches Student's t in closed form, and Tables 1-3 show mean ± std and Table 3 the tests."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from psdif.config import ParamsError, parse_params
from psdif.evaluation.seeds import aggregate, paired_test, per_seed_values
from psdif.evaluation.tables import write_tables
from psdif.variants import VARIANTS

KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "ratio_median", "ratio_std")


def _eval(abs_rel: float, n_images: int = 80, make3d: float | None = 0.4) -> dict:
    """One model's evaluation in the layout stages/evaluate.py writes (numbers derived from abs_rel)."""
    e = {k: abs_rel * (i + 1) for i, k in enumerate(KEYS)}
    e.update(n_images=n_images, dataset="generated mini-KITTI", test_split="synth_eigen", test_listed=80,
             test_set="0123abcd")
    if make3d is not None:
        e["make3d"] = {"abs_rel": make3d, "sq_rel": 2 * make3d, "rmse": 3 * make3d, "rmse_log": make3d / 2,
                       "n_images": 24, "dataset": "generated"}
    return e


def test_one_seed_keeps_the_file_as_it_was():
    e = _eval(0.2)
    assert aggregate({0: e}) == {**e, "n_seeds": 1}


def test_three_seeds_give_mean_sample_std_and_per_seed_values():
    out = aggregate({0: _eval(0.1, make3d=0.3), 1: _eval(0.2, make3d=0.4), 2: _eval(0.3, make3d=0.8)})
    # hand computation: mean of 0.1, 0.2, 0.3 is 0.2; deviations -0.1, 0, 0.1 -> sample variance 0.02/2
    assert out["abs_rel"] == pytest.approx(0.2) and out["std"]["abs_rel"] == pytest.approx(0.1)
    assert out["rmse"] == pytest.approx(0.6) and out["std"]["rmse"] == pytest.approx(0.3)
    assert out["n_images"] == 80 and out["n_seeds"] == 3
    assert set(out["per_seed"]) == {"seed0", "seed1", "seed2"}
    assert out["per_seed"]["seed2"]["abs_rel"] == pytest.approx(0.3)
    # Make3D: mean 0.5, deviations -0.2, -0.1, 0.3 -> variance 0.14/2 = 0.07
    assert out["make3d"]["abs_rel"] == pytest.approx(0.5)
    assert out["make3d"]["std"]["abs_rel"] == pytest.approx(math.sqrt(0.07))
    assert out["make3d"]["dataset"] == "generated" and out["make3d"]["n_images"] == 24
    # every key an outside reader expects is still a number at the top level
    assert all(isinstance(out[k], float) for k in KEYS) and isinstance(out["n_images"], int)
    assert per_seed_values(out) == pytest.approx({"seed0": 0.1, "seed1": 0.2, "seed2": 0.3})


def test_boundary_group_and_its_classes_are_folded_like_make3d():
    """boundary.{dbe_acc, ...} and boundary.per_class.<class>.{abs_rel, a1}: mean and sample std by hand; a
    class one seed lacks is left out; the count of images with GT edges is checked, not averaged."""
    runs = {}
    for seed, (dbe, road) in enumerate(((2.0, 0.1), (4.0, 0.3))):
        classes = {"road": {"abs_rel": road, "a1": 1 - road}, **({"car": {"abs_rel": 0.5, "a1": 0.5}} if seed else {})}
        runs[seed] = {**_eval(0.1 + seed), "boundary": {"dbe_acc": dbe, "band_abs_rel": 2 * road, "dbe_images": 7,
                                                        "per_class": classes}}
    out = aggregate(runs)["boundary"]
    assert out["dbe_acc"] == pytest.approx(3.0) and out["std"]["dbe_acc"] == pytest.approx(math.sqrt(2))
    assert out["band_abs_rel"] == pytest.approx(0.4) and out["dbe_images"] == 7
    assert set(out["per_class"]) == {"road"}
    assert out["per_class"]["road"]["abs_rel"] == pytest.approx(0.2)
    assert out["per_class"]["road"]["std"]["a1"] == pytest.approx(0.2 / math.sqrt(2))  # 0.9, 0.7


def test_seeds_evaluated_on_different_test_sets_are_refused():
    with pytest.raises(ValueError, match=r"metrics/eval/full.json: n_images differs between seeds"):
        aggregate({0: _eval(0.1, n_images=80), 1: _eval(0.2, n_images=79)}, "metrics/eval/full.json")
    other = {**_eval(0.2), "test_set": "ffff0000"}
    with pytest.raises(ValueError, match=r"test_set differs between seeds"):
        aggregate({0: _eval(0.1), 1: other})


def test_what_describes_the_test_set_is_kept_and_a_make3d_not_run_passes_through():
    a, b = _eval(0.1, make3d=None), _eval(0.3, make3d=None)
    a["make3d"] = b["make3d"] = {"not_run": "eval.make3d_root is null"}
    out = aggregate({0: a, 1: b})
    assert {k: out[k] for k in ("dataset", "test_split", "test_listed", "test_set", "n_images")} == {
        "dataset": "generated mini-KITTI", "test_split": "synth_eigen", "test_listed": 80, "test_set": "0123abcd",
        "n_images": 80}
    assert out["make3d"] == {"not_run": "eval.make3d_root is null"}
    assert "test_listed" not in out["std"] and out["abs_rel"] == pytest.approx(0.2)


def test_paired_t_test_matches_closed_forms():
    # n = 3 (2 degrees of freedom): P(|T| > t) = 1 - t / sqrt(2 + t^2)
    row, ref = {"seed0": 0.19, "seed1": 0.18, "seed2": 0.17}, {"seed0": 0.20, "seed1": 0.20, "seed2": 0.20}
    test = paired_test(row, ref)
    d = [-0.01, -0.02, -0.03]                         # mean -0.02, sample sd 0.01
    t = -0.02 / (0.01 / math.sqrt(3))
    assert test.n == 3 and test.mean_diff == pytest.approx(sum(d) / 3)
    assert test.t == pytest.approx(t)
    assert test.p == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    # n = 2 (1 degree of freedom, the Cauchy distribution): P(|T| > t) = 1 - 2 atan(t) / pi
    test2 = paired_test({"seed0": 0.30, "seed1": 0.25}, {"seed0": 0.28, "seed1": 0.24})
    t2 = 0.015 / (math.sqrt(0.00005) / math.sqrt(2))
    assert test2.t == pytest.approx(t2) and test2.p == pytest.approx(1 - 2 * math.atan(t2) / math.pi)


def test_paired_test_uses_only_shared_seeds_and_needs_two():
    assert paired_test({"seed0": 0.1}, {"seed0": 0.2}) is None
    assert paired_test({"seed0": 0.1, "seed1": 0.2}, {"seed1": 0.3, "seed2": 0.1}) is None
    test = paired_test({"seed0": 0.1, "seed1": 0.2, "seed5": 9.0}, {"seed0": 0.2, "seed1": 0.4})
    assert test.n == 2 and test.mean_diff == pytest.approx(-0.15)
    same = paired_test({"seed0": 0.1, "seed1": 0.2}, {"seed0": 0.1, "seed1": 0.2})
    assert same.p == 1.0 and same.mean_diff == 0.0


def _write_eval_dir(path, seeds_by_variant: dict) -> None:
    """metrics/eval/ with ``{variant: {seed: abs_rel}}`` folded as the evaluate stage folds them."""
    path.mkdir(parents=True, exist_ok=True)
    for name, values in seeds_by_variant.items():
        (path / f"{name}.json").write_text(json.dumps(aggregate({s: _eval(v) for s, v in values.items()})))


def test_table3_shows_mean_std_and_paired_tests_with_three_seeds(tmp_path):
    runs = {"baseline": {0: 0.30, 1: 0.32, 2: 0.31}, "msfan": {0: 0.29, 1: 0.30, 2: 0.31},
            "msfan_seg": {0: 0.28, 1: 0.29, 2: 0.27}, "msfan_seg_psdifm": {0: 0.27, 1: 0.26, 2: 0.28},
            "full": {0: 0.25, 1: 0.24, 2: 0.26}, "flat": {0: 0.5}, "untrained": {0: 0.45}}
    _write_eval_dir(tmp_path / "eval", runs)
    write_tables(tmp_path / "eval", tmp_path / "tables")
    md = (tmp_path / "tables" / "table3.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ") and "this run" in line}
    full = rows["+MSFAN+Seg+PSDIFM+Metric Loss (full)"]
    # abs_rel of full: mean 0.25, sample std 0.01 (hand computation)
    assert full[1] == "0.250 ± 0.010"
    # vs baseline: d = -0.05, -0.08, -0.05 -> mean -0.06, sd sqrt(0.0006/2) = 0.01732 -> t = -6.0,
    # p = 1 - 6/sqrt(38) = 0.0267
    t = -0.06 / (math.sqrt(0.0006 / 2) / math.sqrt(3))
    assert t == pytest.approx(-6.0)
    assert full[-2] == f"-0.0600 (p={1 - 6 / math.sqrt(38):.3f}, n=3)" == "-0.0600 (p=0.027, n=3)"
    # vs the row above (msfan_seg_psdifm): d = -0.02, -0.02, -0.02 -> identical gaps, p = 0
    assert full[-1] == "-0.0200 (p<0.001, n=3)"
    baseline = rows["w/o MSFAN, w/o Seg, w/o PSDIFM (baseline)"]
    assert baseline[-2:] == ["—", "—"]
    assert rows["+MSFAN"][-1] == "—" and "n=3" in rows["+MSFAN"][-2]
    assert "paired t-test over training seeds" in md and "over 3 training seeds" in md
    t1 = (tmp_path / "tables" / "table1.md").read_text()
    assert "0.250 ± 0.010" in t1 and "± " in (tmp_path / "tables" / "table2.md").read_text()
    with open(tmp_path / "tables" / "table3.csv", newline="") as f:      # numbers: mean, std, test in columns
        table = list(csv.DictReader(f))
    row = next(r for r in table if r["Method"] == "+MSFAN+Seg+PSDIFM+Metric Loss (full)")
    assert float(row["AbsRel"]) == pytest.approx(0.25) and float(row["AbsRel std"]) == pytest.approx(0.01)
    assert float(row["abs_rel vs baseline"]) == pytest.approx(-0.06)
    assert float(row["abs_rel vs baseline p"]) == pytest.approx(1 - 6 / math.sqrt(38), abs=1e-6)
    assert int(row["abs_rel vs baseline n"]) == 3 and float(row["abs_rel vs row above p"]) == 0.0
    base = next(r for r in table if r["Method"].endswith("(baseline)"))
    assert base["abs_rel vs baseline"] == base["abs_rel vs baseline p"] == ""      # "—" has no number


def test_one_seed_tables_have_no_spread_and_no_test(tmp_path):
    _write_eval_dir(tmp_path / "eval", {name: {0: 0.3} for name in (*VARIANTS, "flat", "untrained")})
    write_tables(tmp_path / "eval", tmp_path / "tables")
    for t in (1, 2, 3):
        md = (tmp_path / "tables" / f"table{t}.md").read_text()
        assert "±" not in md and "t-test" not in md and "vs baseline" not in md


def _raw():
    from psdif.config import preset_path

    return yaml.safe_load(preset_path("embedded").read_text())


@pytest.mark.parametrize("seeds,message", [([], "train.seeds is empty"), ([0, 0], "distinct"),
                                           ([1, -1], "non-negative")])
def test_bad_seed_lists_are_refused_naming_the_key(seeds, message):
    raw = _raw()
    raw["train"]["seeds"] = seeds
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_the_old_single_seed_key_points_to_seeds():
    raw = _raw()
    raw["train"]["seed"] = raw["train"].pop("seeds")[0]
    with pytest.raises(ParamsError, match=r"train\.seed\b.*train\.seeds"):
        parse_params(raw)
