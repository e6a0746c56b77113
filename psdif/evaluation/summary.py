"""The ablation at a glance, in DVC's own views: the headline metrics file and the data of dvc.yaml's plots.

- :func:`headline` -> ``metrics/summary.json``, the one metrics file ``dvc exp show`` leads with (its stage
  comes first in dvc.yaml) and ``dvc metrics diff --targets metrics/summary.json`` shows: per Table-3
  row the figures a reader compares, under short keys that fit a 200-column terminal: the row is named by
  what it adds (:data:`SHORT`: ``base``, ``msfan``, ``seg``, ``psdifm``, ``full``), the figures are KITTI
  Eigen ``abs_rel``, ``sq_rel``, ``rmse``, ``a1`` (Tables 1 and 3), Make3D ``m3d_abs_rel`` (Table 2) and, on
  dense GT (the generated data), the depth boundary error accuracy ``dbe_acc`` (Table 3, design.md §4.6);
  with two or more seeds they are means over the seeds and ``<row>.std.<figure>`` holds their sample
  standard deviation; ``<row>.train_loss`` is the final training loss (the last logged total loss of each
  seed's DVCLive log, mean over seeds). The detailed per-variant files
  (``metrics/eval/<variant>.json``) stay metrics; their column names carry their path, so
  ``dvc exp show --drop '.*/'`` hides them (README, "Ablations and experiments").
- :func:`write_curves` -> ``metrics/plots/train_<term>.csv``: one column per variant (its mean over seeds
  at each logged step), so one plot draws every variant's curve of a loss term on shared axes.
- :func:`write_bars` -> ``metrics/plots/abs_rel.csv``: one row per variant (Table 3 order), for the bar chart
  that ``dvc plots diff <exp>`` draws side by side per experiment.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Mapping, Sequence

from psdif.io import atomic_path, write_json
from psdif.variants import CURVE_TERMS, VARIANTS

# Table-3 variant -> its headline key: what the row adds to the one above (base = the ResNet-18 baseline)
SHORT = {"baseline": "base", "msfan": "msfan", "msfan_seg": "seg", "msfan_seg_psdifm": "psdifm", "full": "full"}
HEADLINE_KITTI = ("abs_rel", "sq_rel", "rmse", "a1")
HEADLINE_MAKE3D = {"m3d_abs_rel": "abs_rel"}
HEADLINE_BOUNDARY = {"dbe_acc": "dbe_acc"}   # the one boundary figure (dense GT only, design.md §4.6)
HEADLINE_PHOTOMETRIC = {"photo_err": "photo_err"}  # your own videos: the self-supervised score (design.md §4.9)


def _read_eval(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"{path} is missing; run `dvc repro` (its evaluate stage) first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc}); delete it and re-run its evaluate stage") from None
    photometric = isinstance(data, dict) and isinstance(data.get("photometric"), dict)  # videos without GT
    if not isinstance(data, dict) or (any(not isinstance(data.get(k), (int, float)) for k in HEADLINE_KITTI)
                                      and not photometric):
        raise ValueError(f"{path}: needs the numbers {', '.join(HEADLINE_KITTI)}; re-run its evaluate stage")
    return data


def not_run(path: Path) -> bool:
    """Whether the evaluate stage wrote ``path`` for a row that was not run (its about file says why)."""
    from psdif.reports import about_path

    about = about_path(path)
    try:
        return about.is_file() and "not_run" in json.loads(about.read_text())
    except json.JSONDecodeError:
        return False


def _round(x: float) -> float:
    return float(f"{x:.5g}")


def headline(eval_dir: Path, variants: Sequence[str] = tuple(VARIANTS)) -> dict:
    """``{short name: {abs_rel, sq_rel, rmse, a1[, m3d_abs_rel][, dbe_acc][, std: {...}]}}`` from
    ``eval_dir/<variant>.json`` (short names: :data:`SHORT`)."""
    out = {}
    for variant in variants:
        path = Path(eval_dir) / f"{variant}.json"
        if not_run(path):  # a row that could not train (your videos without a labeller): no headline
            continue
        data = _read_eval(path)
        row = {k: data[k] for k in HEADLINE_KITTI if k in data}
        spread = {k: data["std"][k] for k in HEADLINE_KITTI if k in data.get("std", {})}
        for group, keys in (("make3d", HEADLINE_MAKE3D), ("boundary", HEADLINE_BOUNDARY),
                            ("photometric", HEADLINE_PHOTOMETRIC)):
            found = data.get(group)
            if isinstance(found, dict):
                for short, key in keys.items():
                    if isinstance(found.get(key), (int, float)):
                        row[short] = found[key]
                        if key in found.get("std", {}):
                            spread[short] = found["std"][key]
        row = {k: _round(v) for k, v in row.items()}
        if spread:
            row["std"] = {k: _round(v) for k, v in spread.items()}
        out[SHORT.get(variant, variant)] = row
    return out


def final_train_loss(live_dirs: Sequence[Path]) -> float | None:
    """Mean over seeds of each run's last logged total loss (``<live_dir>/plots/metrics/train/total.tsv``);
    None when no run logged one."""
    finals = []
    for live_dir in live_dirs:
        curve = read_curve(live_dir, "total")
        if curve:
            finals.append(curve[max(curve)])
    return sum(finals) / len(finals) if finals else None


def write_headline(eval_dir: Path, out: Path, variants: Sequence[str] = tuple(VARIANTS),
                   live_dirs: Mapping[str, Sequence[Path]] | None = None) -> dict:
    """:func:`headline`, plus ``<row>.train_loss`` (:func:`final_train_loss` of the variant's DVCLive folders in
    ``live_dirs``, ``{variant: [folder per seed]}``), -> ``out``."""
    data = headline(eval_dir, variants)
    for variant, dirs in (live_dirs or {}).items():
        loss = final_train_loss(dirs)
        if loss is not None and SHORT.get(variant, variant) in data:
            data[SHORT.get(variant, variant)]["train_loss"] = _round(loss)
    write_json(Path(out), data)
    return data


# ------------------------------------------------------------------------------------------ plots

def read_curve(live_dir: Path, term: str) -> dict[int, float]:
    """``{step: value}`` of one DVCLive scalar (``<live_dir>/plots/metrics/train/<term>.tsv``); {} if absent."""
    path = Path(live_dir) / "plots" / "metrics" / "train" / f"{term}.tsv"
    if not path.is_file():
        return {}
    rows = list(csv.DictReader(io.StringIO(path.read_text()), delimiter="\t"))
    try:
        return {int(r["step"]): float(r[term]) for r in rows}
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: expected columns step and {term} ({exc}); re-run its train stage") from None


def mean_curve(curves: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Mean over seeds at the steps every seed logged."""
    curves = [c for c in curves if c]
    if not curves:
        return {}
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return {s: sum(c[s] for c in curves) / len(curves) for s in steps}


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_curves(live_dirs: Mapping[str, Sequence[Path]], out_dir: Path) -> list[Path]:
    """``{variant: [DVCLive folder per seed]}`` -> ``out_dir/train_<term>.csv`` (step, one column per variant
    that logs the term), for every term in :data:`CURVE_TERMS`; each file is written, even if empty."""
    written = []
    for term in CURVE_TERMS:
        columns = {v: mean_curve([read_curve(d, term) for d in dirs]) for v, dirs in live_dirs.items()}
        columns = {v: c for v, c in columns.items() if c}
        steps = sorted(set().union(*(set(c) for c in columns.values()))) if columns else []
        rows = [[s] + [_round(c[s]) if s in c else "" for c in columns.values()] for s in steps]
        path = Path(out_dir) / f"train_{term}.csv"
        _write_csv(path, ["step", *columns], rows)
        written.append(path)
    return written


def write_bars(summary: Mapping[str, dict], out_dir: Path) -> Path:
    """``out_dir/abs_rel.csv`` from :func:`headline`: variant, abs_rel (mean over seeds), abs_rel_std (0 for
    one seed), in Table 3 order."""
    names = {short: variant for variant, short in SHORT.items()}
    rows = [[names.get(k, k), s["abs_rel"], s.get("std", {}).get("abs_rel", 0.0)] for k, s in summary.items()
            if "abs_rel" in s]  # none without depth GT (your own videos, photometric protocol)
    path = Path(out_dir) / "abs_rel.csv"
    _write_csv(path, ["variant", "abs_rel", "abs_rel_std"], rows)
    return path
