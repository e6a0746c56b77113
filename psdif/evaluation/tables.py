"""Tables 1–3 of the paper (design.md §5): this run's rows beside the published figures.

Inputs (``eval_dir`` = ``metrics/eval``):

- ``<variant>.json`` for the Table 3 variants (baseline, msfan, msfan_seg, msfan_seg_psdifm, full) and the
  reference rows ``flat`` (constant disparity) and ``untrained``: the seven Eigen metrics plus
  ``ratio_median``, ``ratio_std``, ``n_images``, and what they were measured on: ``"dataset"`` (the data
  source), ``"test_split"``, ``"test_listed"`` (lines of the test list; ``n_images`` of them were on disk)
  and ``"test_set"`` (a digest of the evaluated lines); ``"make3d"``: a dict with abs_rel, sq_rel, rmse,
  rmse_log (log10), n_images and a ``"dataset"`` label (e.g. "Make3D Test134"), or ``{"not_run": reason}``.
- ``make3d_<variant>.json``: the same Make3D dict as a separate file (used when ``<variant>.json`` has no
  ``make3d`` key).

A missing file gives a row that says "not run"; a malformed file is an error naming it. A file that does
not record its data (written by an older evaluate) is labelled as such, never with today's params. A file of
several training seeds (``psdif.evaluation.seeds``: means at the top level, ``std``, ``per_seed``) gives
cells "mean ± std", and Table 3 then gets a paired t-test over seeds of each row against the baseline and of
the full model against the row above it.
Outputs (``out_dir`` = ``metrics/tables``): ``table1.md/.csv`` (KITTI Eigen), ``table2.md/.csv`` (Make3D),
``table3.md/.csv`` (ablation), written atomically. This run's rows come first, each labelled with the data,
test split and number of images it was measured on; when they were not all measured on the same test set,
the title and a note say so. Then the paper's published rows (method names and "Sup" exactly as printed).
With a coverage report (``metrics/coverage.json``), a note says how much of the lists the run used.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from psdif.evaluation.datasets import REAL_KITTI, REAL_MAKE3D, SYNTHETIC_KITTI, SYNTHETIC_MAKE3D, VIDEO  # noqa: F401
from psdif.evaluation.metrics import CONSTANT_SPREAD, MAKE3D_KEYS, METRIC_KEYS
from psdif.evaluation.seeds import PairedTest, paired_test, per_seed_values
from psdif.io import atomic_path
from psdif.reports import read_report
from psdif.variants import VARIANTS

NOT_RUN = "not run"
PUBLISHED = "published (paper)"
HEADERS = {"abs_rel": "AbsRel ↓", "sq_rel": "SqRel ↓", "rmse": "RMSE ↓", "rmse_log": "RMSE_log ↓",
           "a1": "a1 ↑", "a2": "a2 ↑", "a3": "a3 ↑"}


@dataclass(frozen=True)
class PaperRow:
    """One published row: method as printed, the paper's "Sup" code ("" where the table has none),
    metrics in the table's column order."""
    method: str
    sup: str
    values: tuple[float, ...]
    variant: str = ""            # Table 3: the variant of this run the row corresponds to


def _rows(text: str, n: int) -> tuple[PaperRow, ...]:
    rows = []
    for line in text.strip().splitlines():
        method, sup, *values = [c.strip() for c in line.split("|")]
        assert len(values) == n, line
        rows.append(PaperRow(method, sup, tuple(float(v) for v in values)))
    return tuple(rows)


# Table 1: KITTI Eigen split, 80 m cap. Sup as printed (N = no segmentation, Seg = with segmentation;
# F and HR are printed without a legend).
PAPER_TABLE1 = _rows("""
SFMLearner [4]   | N   | 0.183 | 1.595 | 6.709 | 0.270 | 0.734 | 0.902 | 0.959
Vid2Depth [5]    | N   | 0.163 | 1.240 | 6.220 | 0.250 | 0.762 | 0.916 | 0.968
GeoNet [14]      | N   | 0.153 | 1.328 | 5.737 | 0.232 | 0.802 | 0.934 | 0.972
Casser [30]      | N   | 0.141 | 1.026 | 5.291 | 0.215 | 0.816 | 0.945 | 0.979
CC [31]          | F   | 0.140 | 1.070 | 5.326 | 0.217 | 0.826 | 0.941 | 0.975
SharinGAN [32]   | N   | 0.116 | 0.939 | 5.068 | 0.203 | 0.850 | 0.948 | 0.978
SCSFM [15]       | N   | 0.114 | 0.813 | 4.706 | 0.191 | 0.873 | 0.960 | 0.982
Monodepth2 [6]   | N   | 0.112 | 0.851 | 4.754 | 0.190 | 0.881 | 0.960 | 0.981
SGDepth [8]      | Seg | 0.112 | 0.833 | 4.688 | 0.190 | 0.884 | 0.961 | 0.983
SAFENet [29]     | Seg | 0.112 | 0.788 | 4.582 | 0.187 | 0.878 | 0.963 | 0.983
PackNet-sfm [13] | N   | 0.111 | 0.785 | 4.601 | 0.189 | 0.878 | 0.960 | 0.982
HR-Depth [22]    | N   | 0.109 | 0.792 | 4.632 | 0.185 | 0.884 | 0.962 | 0.983
Chanduri [33]    | N   | 0.106 | 0.750 | 4.482 | 0.182 | 0.890 | 0.964 | 0.983
CADepth [34]     | N   | 0.105 | 0.769 | 4.535 | 0.181 | 0.892 | 0.964 | 0.983
FeatDepth [28]   | HR  | 0.104 | 0.729 | 4.481 | 0.179 | 0.893 | 0.965 | 0.984
GCNDepth [35]    | HR  | 0.104 | 0.720 | 4.494 | 0.181 | 0.888 | 0.965 | 0.984
FSRE [21]        | Seg | 0.102 | 0.675 | 4.393 | 0.178 | 0.893 | 0.964 | 0.984
Ours             | Seg | 0.101 | 0.718 | 4.376 | 0.176 | 0.896 | 0.966 | 0.984
""", 7)

# Table 2: Make3D (the caption says "within 80 m"; the protocol caps at 70 m). Sup as printed (Y/N).
PAPER_TABLE2 = _rows("""
Liu et al. [36]    | Y | 0.462 | 6.625 | 9.972 | 0.161
Laina et al. [9]   | Y | 0.204 | 1.840 | 5.683 | 0.084
Godard et al. [37] | Y | 0.443 | 7.112 | 8.860 | 0.142
Zhou et al. [4]    | N | 0.392 | 4.473 | 8.307 | 0.194
DDVO [38]          | N | 0.387 | 4.720 | 8.090 | 0.204
Monodepth2 [6]     | N | 0.344 | 4.065 | 7.920 | 0.197
Ours               | N | 0.337 | 3.842 | 7.733 | 0.190
""", 4)

# Table 3: ablation on KITTI (method names as printed, "MAFAN" typo included); no Sup column.
PAPER_TABLE3 = tuple(
    PaperRow(r.method, "", r.values, variant) for r, variant in zip(_rows("""
w/o MSFAN, w/o Seg, w/o PSDIFM   | | 0.109 | 0.792 | 4.632 | 0.185 | 0.884 | 0.962 | 0.983
+MSFAN                           | | 0.107 | 0.776 | 4.620 | 0.185 | 0.886 | 0.962 | 0.983
+MSFAN+Seg                       | | 0.107 | 0.766 | 4.511 | 0.183 | 0.892 | 0.965 | 0.983
+MAFAN+Seg+ PSDIFM               | | 0.103 | 0.747 | 4.405 | 0.177 | 0.895 | 0.966 | 0.984
+MAFAN+Seg+ PSDIFM+Metric Loss   | | 0.101 | 0.718 | 4.376 | 0.176 | 0.896 | 0.966 | 0.984
""", 7), ("baseline", "msfan", "msfan_seg", "msfan_seg_psdifm", "full")))

# this run's rows: variant -> (method label, Sup code in the paper's convention)
RUN_METHODS = {
    "full": ("PSDIF (ours, full)", "Seg"),
    "msfan_seg_psdifm": ("+MSFAN+Seg+PSDIFM", "Seg"),
    "msfan_seg": ("+MSFAN+Seg", "Seg"),
    "msfan": ("+MSFAN", "N"),
    "baseline": ("Baseline (ResNet-18, HR-Depth-style decoder)", "N"),
    "untrained": ("Full network at initialisation (reference)", "—"),
    "flat": ("Constant disparity (reference)", "—"),
}
# Table 3 labels in the paper's wording (one per variant)
TABLE3_METHODS = {
    "baseline": "w/o MSFAN, w/o Seg, w/o PSDIFM (baseline)",
    "msfan": "+MSFAN",
    "msfan_seg": "+MSFAN+Seg",
    "msfan_seg_psdifm": "+MSFAN+Seg+PSDIFM",
    "full": "+MSFAN+Seg+PSDIFM+Metric Loss (full)",
}
TABLE1_RUN = ("full", "baseline", "untrained", "flat")
TABLE2_RUN = ("full", "baseline", "untrained", "flat")
TABLE3_RUN = ("baseline", "msfan", "msfan_seg", "msfan_seg_psdifm", "full")

NOT_RECORDED = "data not recorded (an older evaluate; re-run `dvc repro`)"
# Table 3's boundary columns (dense GT only, design.md §4.6): key of the ``boundary`` group -> header
BOUNDARY_HEADERS = {"dbe_acc": "DBE acc ↓", "dbe_comp": "DBE comp ↓", "band_abs_rel": "band AbsRel ↓"}
SPARSE_GT = "n/a (sparse GT)"
NO_GT_LABELS = "n/a (no GT labels)"  # your videos: depth GT perhaps, semantic GT never


# ------------------------------------------------------------------------------------------ reading

def _number(path: Path, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if value is None:
            return float("nan")
        raise ValueError(f"{path}: key {key!r} must be a number, got {value!r}; re-run the evaluate stage")
    return float(value)


def _metrics(path: Path, obj, keys: Sequence[str], where: str = "") -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {where or 'top level'} must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{path}: missing {where + '.' if where else ''}{missing}; re-run the evaluate stage")
    out = {k: _number(path, k, obj[k]) for k in keys}
    for k in ("ratio_median", "ratio_std"):
        if k in obj:
            out[k] = _number(path, k, obj[k])
    for k in ("n_images", "test_listed"):
        if isinstance(obj.get(k), int) and not isinstance(obj[k], bool):
            out[k] = obj[k]
    for k in ("test_split", "test_set", "protocol"):
        if isinstance(obj.get(k), str):
            out[k] = obj[k]
    spread = obj.get("std")
    if isinstance(spread, dict) and isinstance(obj.get("n_seeds"), int) and obj["n_seeds"] > 1:
        out.update({k: MeanStd(out[k], _number(path, f"std.{k}", spread[k]), obj["n_seeds"])
                    for k in keys if k in spread})
    return out


@dataclass(frozen=True)
class MeanStd:
    """A cell of several seeds: the mean and the sample standard deviation over ``n`` seeds."""
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}"

    def csv_fields(self) -> list[float]:
        return [self.mean, self.std]


def _read(path: Path):
    """The evaluate stage's report, numbers and labels (``<name>.about.json``) together."""
    try:
        return read_report(path)
    except ValueError as exc:
        raise ValueError(f"{exc}; delete it and re-run the evaluate stage") from None


def read_run(eval_dir: Path, variant: str) -> tuple[Optional[dict], Optional[dict], Optional[str]]:
    """(Eigen metrics, Make3D metrics, dataset label override) of one variant; None where not run."""
    path = eval_dir / f"{variant}.json"
    kitti = make3d = label = None
    m3d_raw: dict = {}
    if path.exists():
        raw = _read(path)
        label = raw.get("dataset") if isinstance(raw.get("dataset"), str) else None
        if "not_run" in raw:  # a row that could not train (your videos without a labeller): its cells say so
            return None, {"not_run": str(raw["not_run"])}, label
        kitti = _metrics(path, raw, METRIC_KEYS)
        if isinstance(raw.get("make3d"), dict) and "not_run" in raw["make3d"]:
            make3d = {"not_run": str(raw["make3d"]["not_run"])}
        elif raw.get("make3d") is not None:
            make3d = _metrics(path, raw["make3d"], MAKE3D_KEYS, "make3d")
            m3d_raw = raw["make3d"]
    m3d_path = eval_dir / f"make3d_{variant}.json"
    if make3d is None and m3d_path.exists():
        m3d_raw = _read(m3d_path)
        make3d = _metrics(m3d_path, m3d_raw, MAKE3D_KEYS)
    if make3d is not None and isinstance(m3d_raw.get("dataset"), str):
        make3d["dataset"] = m3d_raw["dataset"]
    return kitti, make3d, label


def _read_group(eval_dir: Path, variant: str, name: str, headers, every: bool) -> Optional[dict]:
    """The group ``name`` of one variant's file (numbers, or mean ± std over seeds) with the keys of ``headers``:
    all of them (``every``), or those it holds; None where the file has no such group or is missing."""
    path = Path(eval_dir) / f"{variant}.json"
    if not path.exists():
        return None
    raw = _read(path)
    group = raw.get(name)
    if not isinstance(group, dict):
        return None
    keys = list(headers) if every else [k for k in headers if k in group]
    return _metrics(path, {**group, "n_seeds": raw.get("n_seeds")}, keys, name)


def read_boundary(eval_dir: Path, variant: str) -> Optional[dict]:
    """The ``boundary`` group of one variant's file; None where it has none (sparse GT) or is missing."""
    return _read_group(eval_dir, variant, "boundary", BOUNDARY_HEADERS, every=False)


PHOTOMETRIC_HEADERS = {"photo_err": "photo err ↓", "photo_err_identity": "no-motion err"}


def read_photometric(eval_dir: Path, variant: str) -> Optional[dict]:
    """The ``photometric`` group of one variant's file (your own videos); None where there is none."""
    return _read_group(eval_dir, variant, "photometric", PHOTOMETRIC_HEADERS, every=True)


def _boundary_cells(eval_dir: Path, variant: str, label: Optional[str]) -> list:
    """Table 3's boundary cells of an evaluated row (``label``: the data it records): the figures, or why
    there are none (sparse GT, or a file of generated data written before the boundary metrics existed)."""
    group = read_boundary(eval_dir, variant)
    if group is None:
        why = ("not recorded" if label == SYNTHETIC_KITTI else
               NO_GT_LABELS if label and label.startswith(VIDEO) else SPARSE_GT)
        return [why] * len(BOUNDARY_HEADERS)
    return [group.get(k, "nan") for k in BOUNDARY_HEADERS]


# ------------------------------------------------------------------------------------------ formatting

def _fmt(value) -> str:
    if isinstance(value, PairedTest):
        return value.cell()
    if isinstance(value, (str, MeanStd)):
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def escape_cell(text: str) -> str:
    """Markdown cell text: a backslash or ``|`` escaped (a bare ``|`` would split the cell), line breaks as spaces."""
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").splitlines())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], numeric_from: int) -> str:
    """A GitHub Markdown table with every pipe aligned; columns from ``numeric_from`` on right-aligned."""
    header = [escape_cell(h) for h in header]
    cells = [[escape_cell(_fmt(c)) for c in row] for row in rows]
    widths = [max(3, len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(items):
        padded = [c.rjust(w) if i >= numeric_from else c.ljust(w)
                  for i, (c, w) in enumerate(zip(items, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if i >= numeric_from else "-" * w
                             for i, w in enumerate(widths)) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in cells)])


@dataclass
class Table:
    name: str
    title: str
    header: list[str]
    rows: list[list]            # display rows
    numeric_from: int
    notes: list[str]

    def markdown(self) -> str:
        parts = [f"# {self.title}", "", markdown_table(self.header, self.rows, self.numeric_from), ""]
        parts += [f"- {n}" for n in self.notes]
        return "\n".join(parts) + "\n"

    def csv(self) -> str:
        """Numbers only in the numeric columns (a text cell such as "not run" or "—" is left empty there): a
        "mean ± std" column is two columns (``<name>``, ``<name> std``), a paired test three (``<name>``
        = mean difference, ``<name> p``, ``<name> n``)."""
        columns = list(zip(*self.rows)) if self.rows else [()] * len(self.header)
        parts = [_csv_suffixes(col) if i >= self.numeric_from else ("",) for i, col in enumerate(columns)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = [h.replace(" ↓", "").replace(" ↑", "") for h in self.header]
        writer.writerow([name + s for name, ss in zip(names, parts) for s in ss])
        for row in self.rows:
            writer.writerow([field for i, (c, ss) in enumerate(zip(row, parts))
                             for field in (_csv_fields(c, len(ss)) if i >= self.numeric_from else [c])])
        return buf.getvalue()


def _csv_suffixes(column: Sequence) -> tuple[str, ...]:
    if any(isinstance(c, PairedTest) for c in column):
        return "", " p", " n"
    if any(isinstance(c, MeanStd) for c in column):
        return "", " std"
    return ("",)


def _csv_fields(cell, width: int) -> list:
    """A numeric column's cell as ``width`` CSV fields: full-precision numbers, or empty fields for text."""
    if isinstance(cell, MeanStd):
        values = cell.csv_fields()
    elif isinstance(cell, PairedTest):
        values = [cell.mean_diff, cell.p, cell.n]
    elif isinstance(cell, float):
        values = [cell]
    elif isinstance(cell, int) and not isinstance(cell, bool):
        values = [cell]
    else:                                         # "not run", "—", "n < 2", "": no number
        values = []
    fields = [repr(v) if isinstance(v, float) else str(v) for v in values]
    return fields + [""] * (width - len(fields))


def _run_row(method: str, sup: Optional[str], source: str, metrics: Optional[dict], keys, tail_keys):
    """A row of this run: method, [Sup], data label, metrics, then ``tail_keys`` (ratio stats, images)."""
    head = [method] + ([sup] if sup is not None else []) + [source]
    if metrics is None or "not_run" in metrics:
        return head + [NOT_RUN] * (len(keys) + len(tail_keys))
    return head + [metrics[k] for k in keys] + [metrics.get(k, "") for k in tail_keys]


def _paper_row(row: PaperRow, with_sup: bool, n_tail: int):
    head = [row.method] + ([row.sup] if with_sup else []) + [PUBLISHED]
    return head + list(row.values) + [""] * n_tail


def seed_tests(eval_dir: Path) -> dict[str, tuple]:
    """Table 3's paired tests over seeds (``psdif.evaluation.seeds.paired_test`` on abs_rel): per variant
    (vs baseline, vs the row above — the latter for ``full`` only); ``{}`` when no variant has two seeds."""
    per_seed = {}
    for v in TABLE3_RUN:
        path = Path(eval_dir) / f"{v}.json"
        per_seed[v] = per_seed_values(_read(path)) if path.exists() else {}
    if not any(len(s) > 1 for s in per_seed.values()):
        return {}
    out = {}
    for i, v in enumerate(TABLE3_RUN):
        vs_base = paired_test(per_seed[v], per_seed["baseline"]) if v != "baseline" else None
        vs_above = paired_test(per_seed[v], per_seed[TABLE3_RUN[i - 1]]) if v == "full" else None
        out[v] = (vs_base, vs_above)
    return out


def _test_cell(test, applies: bool):
    """The paired test itself (the Markdown shows ``PairedTest.cell()``, the CSV its numbers), or why none."""
    if not applies:
        return "—"
    return test if test else "n < 2"


def measured_on(label: Optional[str], metrics: Optional[dict]) -> str:
    """The Data cell of an Eigen row: source, test split, and how many of the listed frames were evaluated."""
    if metrics is None:
        return "this run"
    if not label:
        return f"this run — {NOT_RECORDED}"
    if "test_split" not in metrics:
        return f"this run — {label}, test split not recorded"
    n, listed = metrics.get("n_images"), metrics.get("test_listed")
    frames = f", {n} of {listed} listed frames" if isinstance(listed, int) and listed != n else ""
    return f"this run — {label}, test split {metrics['test_split']}{frames}"


def _test_sets(runs: dict, variants) -> dict[tuple, list[str]]:
    """Distinct test sets (source, split, frame digest, images) of this run's evaluated rows -> variants."""
    sets: dict[tuple, list[str]] = {}
    for v in variants:
        kitti, _, label = runs[v]
        if kitti is not None:
            key = (label or NOT_RECORDED, kitti.get("test_split", "?"), kitti.get("test_set", "?"),
                   kitti.get("n_images", "?"))
            sets.setdefault(key, []).append(v)
    return sets


def measured_title(sets: dict[tuple, list[str]]) -> str:
    """What this run's rows of an Eigen-protocol table were measured on, for its title (from the files,
    never from the table's name: a run on the generated data or another split says so)."""
    if not sets:
        return "this run not evaluated"
    if len(sets) > 1:
        return "WARNING: rows of this run on different test sets"
    (label, split, _, n), = sets
    return f"this run on {label}, test split {split}, {n} images"


def _mixed_note(sets: dict[tuple, list[str]]) -> list[str]:
    if len(sets) <= 1:
        return []
    parts = "; ".join(f"{', '.join(vs)}: {src}, test split {split}, {n} images (frames {digest})"
                      for (src, split, digest, n), vs in sets.items())
    return [f"WARNING: this run's rows were measured on different test sets and are not comparable with one "
            f"another — {parts}. Re-run `dvc repro` to evaluate every row on the same frames."]


def coverage_note(cover: Optional[dict]) -> list[str]:
    """One line: how much of the train / val / test lists the run found on disk (metrics/coverage.json)."""
    if not cover:
        return []
    parts = []
    for role, what in (("train", "train lines"), ("val", "val lines"), ("test", "test frames")):
        c = cover.get(role)
        if c:
            part = f"{c['used']} of {c['listed']} listed {what}"
            if c.get("missing"):
                why = ", ".join(f"{n} {reason}" for reason, n in c.get("missing_by_reason", {}).items())
                part += f" (not used: {why or c['missing']})"
            parts.append(part)
    return [f"Coverage of the lists (metrics/coverage.json): {'; '.join(parts)}."] if parts else []


def collapsed_note(eval_dir: Path, variants: Sequence[str]) -> list[str]:
    """A note naming each (variant, seed) whose network predicts one constant depth (``disp_spread`` of the
    evaluate stage below ``CONSTANT_SPREAD``): its row then measures a failed training run, not the variant."""
    found = []
    for v in variants:
        path = Path(eval_dir) / f"{v}.json"
        if not path.exists():
            continue
        raw = _read(path)
        if isinstance(raw.get("per_seed"), dict):
            spreads = per_seed_values(raw, "disp_spread")
        else:
            spreads = {"": raw["disp_spread"]} if isinstance(raw.get("disp_spread"), (int, float)) else {}
        found += [f"{v}{' ' + seed if seed else ''} (disparity spread {spread:.1e})"
                  for seed, spread in spreads.items() if spread < CONSTANT_SPREAD]
    if not found:
        return []
    return [f"COLLAPSED: {', '.join(found)} predicts one constant depth for every pixel: that training run "
            "collapsed (its sigmoid saturated and the auto-mask hid every warp; docs/design.md, 'A collapsed "
            "run'), so the row measures a failed run, not the variant."]


EIGEN_TITLE = "Table 1 — Eigen protocol (Garg crop, depth capped at 80 m)"
BENCHMARK_TITLE = ("Table 1 — KITTI improved ground truth (eigen_benchmark protocol: annotated depth of Uhrig et "
                   "al. 2017, no crop, prediction capped at 80 m)")


def _protocols(runs: dict) -> set[str]:
    """The KITTI protocols of this run's evaluated Table 1 rows (``eigen`` for a file that does not say)."""
    return {runs[v][0].get("protocol", "eigen") for v in TABLE1_RUN if runs[v][0] is not None}


def table1_title(runs: dict) -> str:
    """Table 1's protocol, in its title: the Eigen protocol, or the improved GT's when every row used it."""
    return BENCHMARK_TITLE if _protocols(runs) == {"eigen_benchmark"} else EIGEN_TITLE


def protocol_note(runs: dict) -> list[str]:
    """Under Table 1: what the eigen_benchmark protocol is, and that the paper's rows used the Eigen one."""
    found = _protocols(runs)
    if "eigen_benchmark" not in found:
        return []
    mixed = (" WARNING: some of this run's rows used the Eigen protocol and some eigen_benchmark; they are not "
             "comparable." if len(found) > 1 else "")
    return ["eigen_benchmark protocol (Monodepth2's): GT = KITTI's annotated depth (Uhrig et al. 2017), every "
            "annotated pixel (no Eigen crop, no cap on the GT), per-image median scaling, prediction clamped to "
            "[1e-3, 80] m. The paper's rows were measured with the Eigen protocol on raw LiDAR GT: not "
            f"comparable with these.{mixed}"]


def build_tables(eval_dir: Path, kitti_label: Optional[str] = None, make3d_label: Optional[str] = None,
                 coverage: Optional[dict] = None) -> list[Table]:
    """Read ``eval_dir`` and assemble Tables 1–3 (see module docstring).

    ``kitti_label`` / ``make3d_label`` only label results that do not record their data themselves.
    """
    eval_dir = Path(eval_dir)
    runs = {v: read_run(eval_dir, v) for v in dict.fromkeys(TABLE1_RUN + TABLE3_RUN)}
    spread = sorted({m.n for r in runs.values() for part in r[:2] if part for m in part.values()
                     if isinstance(m, MeanStd)})
    spread_note = ([f"Cells 'mean ± std' of this run: over {' / '.join(map(str, spread))} training seeds "
                    "(train.seeds), sample standard deviation."] if spread else [])

    def source(variant):
        return measured_on(runs[variant][2] or kitti_label, runs[variant][0])

    def titled(title: str, sets: dict, published: str) -> str:
        return f"{title} — {measured_title(sets)}; then the paper's rows ({published})"

    ratio_cols = ["ratio med", "ratio std", "images"]
    kitti_cols = [HEADERS[k] for k in METRIC_KEYS]
    legend = ("Sup: the paper's column as printed (N = without segmentation, Seg = with segmentation; F and "
              "HR are not defined in the paper); this run's rows are monocular (M) training.")
    tail = ("ratio_median", "ratio_std", "n_images")
    t1_rows = [_run_row(*RUN_METHODS[v], source(v), runs[v][0], METRIC_KEYS, tail) for v in TABLE1_RUN]
    t1_rows += [_paper_row(r, True, len(tail)) for r in PAPER_TABLE1]
    sets1 = _test_sets(runs, TABLE1_RUN)
    t1 = Table("table1", titled(table1_title(runs), sets1, "KITTI Eigen split, 697 images, depth capped at 80 m"),
               ["Method", "Sup", "Data"] + kitti_cols + ratio_cols, t1_rows, 3,
               _mixed_note(sets1) + collapsed_note(eval_dir, [v for v in TABLE1_RUN if v in VARIANTS]) +
               [legend, "Per-image median scaling; ratio med / std = median of the scale ratios and the std of "
                        "ratio/median (Monodepth2 convention).",
                f"Rows marked '{PUBLISHED}' are copied from the paper (J. Imaging 2025, 11(7), 218); they are "
                f"comparable with this run only when it used {REAL_KITTI}, test split eigen, all 697 frames.",
                *protocol_note(runs), *spread_note] + coverage_note(coverage))

    m3d_keys = list(MAKE3D_KEYS)

    def m3d_source(v):
        m3d = runs[v][1]
        if m3d is None:
            return "this run"
        return "this run" if "not_run" in m3d else f"this run — {m3d.get('dataset', make3d_label or NOT_RECORDED)}"

    # Table 2's Sup is supervision (Y/N): every row of this run is self-supervised
    t2_rows = [_run_row(RUN_METHODS[v][0], "N" if v in VARIANTS else "—", m3d_source(v), runs[v][1], m3d_keys,
                        ("n_images",))
               for v in TABLE2_RUN]
    t2_rows += [_paper_row(r, True, 1) for r in PAPER_TABLE2]
    reasons = sorted({runs[v][1]["not_run"] for v in TABLE2_RUN if runs[v][1] and "not_run" in runs[v][1]})
    m3d_sets = sorted({runs[v][1].get("dataset", make3d_label or NOT_RECORDED) for v in TABLE2_RUN
                       if runs[v][1] and "not_run" not in runs[v][1]})
    m3d_title = (f"this run on {m3d_sets[0]}" if len(m3d_sets) == 1 else "this run not evaluated" if not m3d_sets
                 else f"WARNING: this run's rows on different sets ({'; '.join(m3d_sets)})")
    t2 = Table("table2", f"Table 2 — Make3D protocol (Test134), no fine-tuning — {m3d_title}; then the paper's "
                         "rows (Make3D Test134)",
               ["Method", "Sup", "Data"] + [HEADERS[k] for k in m3d_keys] + ["images"], t2_rows, 3,
               [f"Make3D not run: {r}." for r in reasons] +
               ["Sup as printed in the paper (Y = supervised, N = self-supervised).",
                "Protocol: 2:1 centre crop, GT rows 17:38 of the 55×305 grid, 0 < gt < 70 m, median scaling, "
                "prediction capped at 70 m; RMSE_log on log10.", *spread_note])

    t3_rows = [_run_row(TABLE3_METHODS[v], None, source(v), runs[v][0], METRIC_KEYS, tail)
               + (_boundary_cells(eval_dir, v, runs[v][2]) if runs[v][0] else [NOT_RUN] * len(BOUNDARY_HEADERS))
               for v in TABLE3_RUN]
    t3_rows += [_paper_row(r, False, len(tail) + len(BOUNDARY_HEADERS)) for r in PAPER_TABLE3]
    # the boundary columns say what they measured: dense GT (the generated data) or nothing (sparse GT, KITTI)
    dense = any(read_boundary(eval_dir, v) is not None for v in TABLE3_RUN)
    boundary_note = ("Boundary columns (this run, against dense ground truth; design.md §4.6): DBE acc / comp = "
                     "iBims-1 depth boundary error (px) of the predicted depth's Canny edges against the GT depth "
                     "edges; band AbsRel = abs_rel within 3 px of the GT's semantic boundaries "
                     "(metrics/eval/<variant>.json, 'boundary', also per class); 'not recorded': evaluated before "
                     "these metrics existed (re-run `dvc repro`); the paper reports none." if dense else
                     f"Boundary columns '{NO_GT_LABELS}': they need dense depth and semantic ground truth (design.md "
                     "§4.6), and your videos have no semantic ground truth; the paper reports none."
                     if any((runs[v][2] or "").startswith(VIDEO) for v in TABLE3_RUN) else
                     f"Boundary columns '{SPARSE_GT}': they need dense ground truth (design.md §4.6), which this "
                     "run's test frames do not have; the paper reports none.")
    not_run_notes = [f"{v}: not run ({runs[v][1]['not_run']})." for v in TABLE3_RUN
                     if runs[v][0] is None and runs[v][1] and "not_run" in runs[v][1]]
    photometric = {v: read_photometric(eval_dir, v) for v in TABLE3_RUN}
    photo_cols, photo_notes = [], []
    if any(photometric.values()):  # your own videos: the self-supervised score of the held-out clips
        photo_cols = list(PHOTOMETRIC_HEADERS.values())
        for row, v in zip(t3_rows, TABLE3_RUN):
            row += [photometric[v][k] if photometric[v] else NOT_RUN for k in PHOTOMETRIC_HEADERS]
        for row in t3_rows[len(TABLE3_RUN):]:
            row += [""] * len(photo_cols)
        no_gt = any(runs[v][0] and runs[v][0].get("protocol") == "photometric" for v in TABLE3_RUN)
        photo_notes = ["Photometric columns (your videos, design.md §4.9): photo err = the masked photometric "
                       "reprojection error (SSIM and L1, as in training) of each held-out frame rebuilt from its "
                       "neighbours t-1 and t+1 with the predicted depth and the trained pose net; no-motion err = "
                       "the same error of the neighbours left unwarped; lower is better, and a row is useful only "
                       "below its no-motion error." + (" The clips have no depth GT (data.test_protocol: "
                                                       "photometric): the Eigen columns are nan." if no_gt else "")]
    tests = seed_tests(eval_dir)
    test_cols, test_notes = [], []
    if tests:
        test_cols = ["abs_rel vs baseline", "abs_rel vs row above"]
        for row, v in zip(t3_rows, TABLE3_RUN):
            vs_base, vs_above = tests[v]
            row += [_test_cell(vs_base, v != "baseline"), _test_cell(vs_above, v == "full")]
        for row in t3_rows[len(TABLE3_RUN):]:
            row += ["", ""]
        test_notes = ["Tests (this run): two-sided paired t-test over training seeds on the test-set abs_rel; "
                      "cell = mean over seeds of (row − reference), p, n = seeds both rows have (a pair shares "
                      "its seed: initialisation, data order, augmentation); Student's t with n − 1 degrees of "
                      "freedom. 'vs row above' compares the full model with +MSFAN+Seg+PSDIFM (the metric loss "
                      "alone). With n = 3 only large, consistent gaps reach p < 0.05."]
    switches = "; ".join(f"{v}: msfan={int(VARIANTS[v].msfan)} seg={int(VARIANTS[v].seg)} "
                         f"psdifm={int(VARIANTS[v].psdifm)} metric_loss={int(VARIANTS[v].metric_loss)}"
                         for v in TABLE3_RUN)
    sets3 = _test_sets(runs, TABLE3_RUN)
    t3 = Table("table3", titled("Table 3 — ablation", sets3, "KITTI Eigen split"),
               ["Method", "Data"] + kitti_cols + ratio_cols + list(BOUNDARY_HEADERS.values()) + photo_cols + test_cols,
               t3_rows, 2,
               _mixed_note(sets3) + collapsed_note(eval_dir, TABLE3_RUN) + [f"Variants in row order: {switches}.",
                                     "The paper's rows are in the same order (method names as printed, 'MAFAN' "
                                     "typo included); the paper reports one run per row.", boundary_note,
                                     *photo_notes, *not_run_notes,
                                     *spread_note,
                                     *test_notes] + coverage_note(coverage))
    return [t1, t2, t3]


def write_tables(eval_dir: Path, out_dir: Path, kitti_label: Optional[str] = None,
                 make3d_label: Optional[str] = None, coverage: Optional[dict] = None) -> list[Path]:
    """Write ``table{1,2,3}.md`` and ``.csv`` into ``out_dir`` atomically; returns the paths written."""
    out_dir = Path(out_dir)
    written = []
    for table in build_tables(Path(eval_dir), kitti_label, make3d_label, coverage):
        for suffix, text in ((".md", table.markdown()), (".csv", table.csv())):
            path = out_dir / f"{table.name}{suffix}"
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(path)
    return written
