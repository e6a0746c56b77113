"""bench/ablation.py: the powered ablation's report (BENCHMARKS.md), checked against hand computations."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("ablation", REPO / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eval(abs_rel: list[float], dbe: list[float]) -> dict:
    per_seed = {f"seed{k}": {"abs_rel": a, "a1": 0.5, "boundary": {"dbe_acc": d}} for k, (a, d) in
                enumerate(zip(abs_rel, dbe))}
    return {"abs_rel": sum(abs_rel) / len(abs_rel), "per_seed": per_seed}


def test_interval_and_paired_tests_by_hand(tmp_path):
    ab = _module()
    (tmp_path / "baseline.json").write_text(json.dumps(_eval([0.30, 0.32, 0.34], [5.0, 6.0, 7.0])))
    (tmp_path / "full.json").write_text(json.dumps(_eval([0.29, 0.30, 0.33], [4.0, 5.0, 6.5])))
    text, result = ab.report(tmp_path, ["baseline", "full"], [("full", "baseline")])
    # mean 0.32, sd 0.02, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.02 / sqrt(3)
    base = result["rows"]["baseline"]["abs_rel"]
    assert base["mean"] == pytest.approx(0.32) and base["ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3))
    # differences -0.01, -0.02, -0.01: mean -0.04/3, sd 0.005774; t = mean / (sd / sqrt 3) = -4.0, p(2 df) = 0.0572
    test = result["pairs"]["full-baseline"]["abs_rel"]
    assert test["n"] == 3 and test["mean"] == pytest.approx(-0.04 / 3) and test["below"] == 3
    assert test["t_p"] == pytest.approx(0.05719, abs=2e-5)
    # DBE differences -1, -1, -0.5 (nested under boundary); Wilcoxon exact p with n = 3, all negative: 2/8
    dbe = result["pairs"]["full-baseline"]["dbe_acc"]
    assert dbe["mean"] == pytest.approx(-2.5 / 3) and dbe["wilcoxon_p"] == pytest.approx(0.25)
    assert "| full − baseline | abs_rel (Eigen, all pixels) | 3 | -0.0133" in text
    # a metric no seed reports is n/a, not zero
    assert result["rows"]["full"]["dbe_comp"]["n"] == 0 and "n/a" in text


def test_single_seed_file_is_refused(tmp_path):
    ab = _module()
    (tmp_path / "baseline.json").write_text(json.dumps({"abs_rel": 0.3}))
    with pytest.raises(SystemExit, match="one seed only"):
        ab.report(tmp_path, ["baseline"], [])
