"""Several training seeds per variant: the spread of Tables 1-3 and the paired test of Table 3.

The paper's ablation (Table 3) is one run per row and names repeated trials with standard deviations and
t-tests as future work (paper, Section 5); Monodepth2's own reruns spread over abs_rel 0.113-0.116. With
``train.seeds`` of two or more, every variant trains once per seed (stages ``train_<variant>@<seed>``) and:

- :func:`aggregate` folds the per-seed evaluations of one variant into ``metrics/eval/<variant>.json``: the
  top-level keys keep their meaning and place (now the mean over seeds, so every reader of the single-seed
  file keeps working), plus ``n_seeds``, ``std`` (sample standard deviation over seeds, ddof = 1) and
  ``per_seed`` (``seed<k>``: that seed's evaluation, in the single-seed layout). ``make3d`` and ``boundary``
  (with each class of its ``per_class``) get the same.
- :func:`paired_test` compares two variants over the seeds they share: a two-sided paired t-test on the
  test-set abs_rel, one pair per seed (both variants trained with that seed: same data order and
  augmentation draws). n is the number of seeds, so it measures the training-to-training spread that a
  single run hides; a test over the test images would treat one trained network as certain.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

SEED_PREFIX = "seed"
COUNTS = ("n_images", "test_listed", "dbe_images")  # integers that describe the test set: equal across seeds
# groups of results folded the same way, each with its own ``std``; under ``per_class`` every class is one
NESTED = ("make3d", "boundary", "per_class", "photometric")


def seed_key(seed: int) -> str:
    return f"{SEED_PREFIX}{seed}"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fold(per_seed: Mapping[int, dict], where: str, nested: Optional[tuple] = NESTED) -> dict:
    """Mean (and, from two seeds on, std) of every result number all seeds report; what describes the test
    set (labels, split, frame digest, image counts) is checked to be the same for every seed and kept. The
    groups of ``nested`` (None: every dict) that all seeds have are folded in turn; other dicts are left out."""
    entries = list(per_seed.values())
    first = entries[0]
    out, spread = {}, {}
    for key, value in first.items():
        if isinstance(value, dict):
            if (nested is None or key in nested) and all(isinstance(e.get(key), dict) for e in entries):
                inner = None if key == "per_class" else NESTED
                out[key] = _fold({s: e[key] for s, e in per_seed.items()}, f"{where} ({key})", inner)
            continue
        if _is_number(value) and key not in COUNTS:
            if all(_is_number(e.get(key)) for e in entries):
                values = [e[key] for e in entries]
                out[key] = float(np.mean(values))
                if len(entries) > 1:
                    spread[key] = float(np.std(values, ddof=1))
            continue
        seen = {json.dumps(e.get(key), sort_keys=True) for e in entries}
        if len(seen) > 1:
            raise ValueError(f"{where}: {key} differs between seeds ({', '.join(sorted(seen))}); every seed "
                             "must be evaluated on the same test set; re-run `dvc repro`")
        out[key] = value
    if spread:
        out["std"] = spread
    return out


def aggregate(per_seed: Mapping[int, dict], where: str = "evaluation") -> dict:
    """``{seed: evaluation}`` (each as ``stages/evaluate.py`` writes one model's) -> one variant's file.

    One seed: that evaluation unchanged, plus ``n_seeds``. Several: see the module docstring.
    """
    if not per_seed:
        raise ValueError(f"{where}: no seed evaluated; train.seeds is empty")
    if len(per_seed) == 1:
        (only,) = per_seed.values()
        return {**only, "n_seeds": 1}
    out = _fold(per_seed, where)
    out["n_seeds"] = len(per_seed)
    out["per_seed"] = {seed_key(s): e for s, e in sorted(per_seed.items())}
    return out


def per_seed_values(entry: Optional[dict], key: str = "abs_rel") -> dict[str, float]:
    """``{seed<k>: value}`` of one variant's file (a single-seed file has no seeds to pair: ``{}``)."""
    if not entry or not isinstance(entry.get("per_seed"), dict):
        return {}
    return {s: float(e[key]) for s, e in entry["per_seed"].items()
            if isinstance(e, dict) and isinstance(e.get(key), (int, float))}


@dataclass(frozen=True)
class PairedTest:
    """``row`` minus ``reference`` over the n shared seeds: mean difference, t statistic, two-sided p."""
    n: int
    mean_diff: float
    t: float
    p: float

    def cell(self) -> str:
        p = "p<0.001" if self.p < 0.001 else f"p={self.p:.3f}"
        return f"{self.mean_diff:+.4f} ({p}, n={self.n})"


def paired_test(row: Mapping[str, float], reference: Mapping[str, float]) -> Optional[PairedTest]:
    """Two-sided paired t-test of ``row`` against ``reference`` over the seeds both have; None below 2.

    t = mean(d) / (sd(d) / sqrt(n)), d = row - reference per seed, n - 1 degrees of freedom. Identical
    differences (sd = 0) give t = ±inf and p = 0, or t = 0 and p = 1 when every difference is zero.
    """
    from scipy import stats

    shared = sorted(set(row) & set(reference))
    if len(shared) < 2:
        return None
    d = np.array([row[s] - reference[s] for s in shared], dtype=np.float64)
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return PairedTest(n, mean, 0.0 if mean == 0 else math.copysign(math.inf, mean), 1.0 if mean == 0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    return PairedTest(n, mean, t, p)
