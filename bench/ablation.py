"""The powered ablation's report: per Table-3 row, mean and 95% confidence interval over training seeds of the
global and boundary metrics, and paired tests between rows that share seeds (BENCHMARKS.md, "An ablation with
power").

Reads ``metrics/eval/<row>.json`` of a multi-seed run (``per_seed``: one evaluation per seed, written by the
evaluate stage). The experiment that BENCHMARKS.md reports, on the embedded default (one line, 2-core CPU):

    dvc exp run -S 'train.seeds=[0,1,2,3,4,5]'
    python bench/ablation.py

Each pair is the row minus the reference over the seeds both rows trained with (same data order and
augmentation draws): mean difference, its 95% interval (t, n - 1 degrees of freedom), the two-sided paired
t-test and the Wilcoxon signed-rank test (no normality assumed). Lower is better for every metric but a1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROWS = ("baseline", "msfan", "msfan_seg", "msfan_seg_psdifm", "full")
# each row against the baseline, each addition against the row below it, and all semantic guidance at once
PAIRS = (("msfan", "baseline"), ("msfan_seg", "baseline"), ("msfan_seg_psdifm", "baseline"), ("full", "baseline"),
         ("msfan_seg", "msfan"), ("msfan_seg_psdifm", "msfan_seg"), ("full", "msfan_seg_psdifm"), ("full", "msfan"))
# (key, where in an evaluation, label, lower is better)
METRICS = [
    ("abs_rel", (), "abs_rel (Eigen, all pixels)", True),
    ("a1", (), "a1 (δ < 1.25)", False),
    ("dbe_acc", ("boundary",), "DBE accuracy (px)", True),
    ("dbe_comp", ("boundary",), "DBE completeness (px)", True),
    ("band_abs_rel", ("boundary",), "abs_rel in the semantic-boundary band", True),
    ("off_band_abs_rel", ("boundary",), "abs_rel off the band", True),
]


def seed_values(entry: dict, key: str, where: tuple) -> dict[str, float]:
    """``{seed<k>: value}`` of one metric over the seeds of a row's evaluation file."""
    out = {}
    for seed, ev in (entry.get("per_seed") or {}).items():
        node = ev
        for part in where:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[seed] = float(value)
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided t interval (nan below two values)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return float(values.mean()) if n else math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean()), float(half)


def paired(row: dict[str, float], ref: dict[str, float]) -> dict | None:
    """Row minus reference over shared seeds: mean, 95% half-width, paired t p, Wilcoxon p, wins, n."""
    from scipy import stats

    shared = sorted(set(row) & set(ref))
    if len(shared) < 2:
        return None
    d = np.array([row[s] - ref[s] for s in shared])
    mean, half = interval(d)
    t_p = float(stats.ttest_rel([row[s] for s in shared], [ref[s] for s in shared]).pvalue) if d.std() else \
        (1.0 if mean == 0 else 0.0)
    w_p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"n": len(shared), "mean": mean, "ci95": half, "t_p": t_p, "wilcoxon_p": w_p,
            "below": int(np.sum(d < 0))}


def report(eval_dir: Path, rows: list[str], pairs: list[tuple[str, str]]) -> tuple[str, dict]:
    entries = {}
    for row in rows:
        path = eval_dir / f"{row}.json"
        if not path.is_file():
            raise SystemExit(f"error: {path}: no evaluation of row {row!r} (run the experiment first)")
        entries[row] = json.loads(path.read_text())
        if not entries[row].get("per_seed"):
            raise SystemExit(f"error: {path}: one seed only (no per_seed); train.seeds needs two or more")
    result: dict = {"rows": {}, "pairs": {}}
    lines = ["| row | seeds | " + " | ".join(label for _, _, label, _ in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for row in rows:
        cells, result["rows"][row] = [], {}
        n = len(entries[row]["per_seed"])
        for key, where, _, _ in METRICS:
            values = np.array(list(seed_values(entries[row], key, where).values()))
            mean, half = interval(values)
            result["rows"][row][key] = {"mean": mean, "ci95": half, "n": len(values)}
            cells.append("n/a" if math.isnan(mean) else f"{mean:.4f} ± {half:.4f}")
        lines.append(f"| {row} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "Mean ± half-width of the 95% t interval over seeds.", "",
              "| pair (row − reference) | metric | n | mean difference ± 95% | paired t p | Wilcoxon p | "
              "seeds where the row is lower |", "|---|---|---:|---:|---:|---:|---:|"]
    for row, ref in pairs:
        for key, where, label, _ in METRICS:
            test = paired(seed_values(entries[row], key, where), seed_values(entries[ref], key, where))
            result["pairs"].setdefault(f"{row}-{ref}", {})[key] = test
            if test:
                lines.append(f"| {row} − {ref} | {label} | {test['n']} | {test['mean']:+.4f} ± {test['ci95']:.4f} "
                             f"| {test['t_p']:.3f} | {test['wilcoxon_p']:.3f} | {test['below']}/{test['n']} |")
    return "\n".join(lines) + "\n", result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", default="metrics/eval", type=Path)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--pairs", default=",".join(f"{a}:{b}" for a, b in PAIRS),
                        help="row:reference pairs, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",") if p]
    text, result = report(args.eval_dir, rows, pairs)
    sys.stdout.write(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
