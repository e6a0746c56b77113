"""What DVC shows: metrics files hold numbers only (labels beside them), table CSVs hold numbers, Markdown
cells are escaped, and table titles say what this run was measured on."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from psdif.evaluation.tables import build_tables, write_tables
from psdif.pipeline import build
from psdif.reports import about_path, read_report, write_report

REPO = Path(__file__).resolve().parents[1]

REPORT = {"abs_rel": 0.25, "n_images": 2, "dataset": "KITTI raw", "test_split": "mine", "test_set": "0a1b2c3d",
          "post_process": True, "first_missing": ["a 1 l", "b 2 r"], "empty": {}, "none": None,
          "make3d": {"not_run": "no Make3D images"},
          "per_class": {"road": 0.9, "wall": None}}


def non_numbers(obj, where: str = "") -> list[str]:
    """Every leaf of a JSON object that is not an int or float (bools, strings, lists, null), by its path."""
    if isinstance(obj, dict):
        return [bad for key, value in obj.items() for bad in non_numbers(value, f"{where}.{key}".lstrip("."))]
    ok = isinstance(obj, (int, float)) and not isinstance(obj, bool)
    return [] if ok else [f"{where}={obj!r}"]


def declared_metrics(seeds=(0,)) -> list[str]:
    """Every metrics file dvc.yaml declares (foreach stages expanded over ``seeds``)."""
    paths = []
    for stage in build()["stages"].values():
        body = stage.get("do", stage)
        for entry in body.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            paths += [path.replace("${item}", str(s)) for s in seeds] if "${item}" in path else [path]
    return paths


def test_a_report_splits_into_numbers_and_labels_and_reads_back_whole(tmp_path):
    path = tmp_path / "metrics" / "r.json"
    write_report(path, REPORT)
    numbers = json.loads(path.read_text())
    assert non_numbers(numbers) == []
    assert numbers == {"abs_rel": 0.25, "n_images": 2, "per_class": {"road": 0.9}}   # by hand
    about = json.loads(about_path(path).read_text())
    assert about_path(path).name == "r.about.json"
    assert about["dataset"] == "KITTI raw" and about["per_class"] == {"wall": None}
    assert "abs_rel" not in about and about["empty"] == {}
    assert read_report(path) == REPORT
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.about.json", "r.json"]   # no temporary files


def test_every_declared_metrics_file_of_the_writers_is_numbers_only(tmp_path):
    """The tables stage over evaluate-shaped reports and the two coverage reports: coverage.json (its
    metric) holds numbers only, and the tables read the labels back from beside the numbers."""
    eval_dir = tmp_path / "metrics" / "eval"
    for name, abs_rel in (("full", 0.2), ("baseline", 0.3), ("flat", 0.5)):
        write_report(eval_dir / f"{name}.json", {**REPORT, "abs_rel": abs_rel, "sq_rel": 1.0, "rmse": 5.0,
                                                 "rmse_log": 0.3, "a1": 0.7, "a2": 0.9, "a3": 0.95,
                                                 "ratio_median": 30.0, "ratio_std": 0.1, "test_listed": 2})
    (tmp_path / "metrics" / "filter.json").write_text(json.dumps({"train_split": "x", "coverage": {
        "train": {"list": "x/train_files.txt", "listed": 4, "used": 3, "missing": 1,
                  "missing_by_reason": {"static": 1}, "first_missing": ["d 1 l (static)"]}}}))
    write_report(tmp_path / "metrics" / "export_gt.json", {"test_split": "mine", "list": "t.txt", "listed": 2,
                                                         "used": 2, "missing": 0, "missing_by_reason": {}})
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "tables.py"), "--params",
                           str(REPO / "psdif" / "presets" / "embedded.yaml")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    declared = set(declared_metrics())
    assert {"metrics/coverage.json", "metrics/eval/full.json", "metrics/export_gt.json"} <= declared
    assert "metrics/filter.json" not in declared     # written whole (labels, lists) by the filter: an output
    for rel in ("metrics/coverage.json", "metrics/eval/full.json", "metrics/export_gt.json"):
        assert non_numbers(json.loads((tmp_path / rel).read_text())) == [], rel
    cover = read_report(tmp_path / "metrics/coverage.json")
    assert cover["train"]["first_missing"] == ["d 1 l (static)"] and cover["test"]["used"] == 2
    t1 = (tmp_path / "metrics/tables/table1.md").read_text(encoding="utf-8")
    assert "this run — KITTI raw, test split mine" in t1
    assert "3 of 4 listed train lines" in t1


def _eval_dir(tmp_path: Path, dataset: str = "KITTI raw", split: str = "mine") -> Path:
    d = tmp_path / "eval"
    for name in ("full", "baseline"):
        write_report(d / f"{name}.json", {"abs_rel": 0.2, "sq_rel": 1.0, "rmse": 5.0, "rmse_log": 0.3, "a1": 0.7,
                                          "a2": 0.9, "a3": 0.95, "ratio_median": 30.0, "ratio_std": 0.1,
                                          "n_images": 2, "test_listed": 2, "dataset": dataset,
                                          "test_split": split, "test_set": "0a1b2c3d"})
    return d


def test_table_titles_say_what_this_run_measured(tmp_path):
    t1, t2, t3 = build_tables(_eval_dir(tmp_path))
    assert t1.title.startswith("Table 1 — Eigen protocol") and \
        "this run on KITTI raw, test split mine, 2 images; then the paper's" in t1.title
    assert "KITTI Eigen split, 697 images" in t1.title                # the published rows' protocol
    assert t3.title.startswith("Table 3 — ablation — this run on KITTI raw, test split mine, 2 images")
    assert "this run not evaluated" in t2.title                        # no Make3D row in these files


def test_markdown_cells_are_escaped(tmp_path):
    table = build_tables(_eval_dir(tmp_path, dataset="odd | label \\ here"))[0]
    lines = [ln for ln in table.markdown().splitlines() if ln.startswith("|")]
    widths = {len(ln.replace("\\|", "")) - len(ln.replace("\\|", "").replace("|", "")) for ln in lines}
    assert widths == {len(table.header) + 1}                            # no cell split by the label's pipe
    assert "odd \\| label \\\\ here" in lines[2]


def test_csv_numeric_columns_parse_to_floats(tmp_path):
    out = tmp_path / "tables"
    write_tables(_eval_dir(tmp_path), out)
    for t in (1, 2, 3):
        table = build_tables(_eval_dir(tmp_path / str(t)))[t - 1]
        with open(out / f"table{t}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) == 1 + len(table.rows)
        for row in rows[1:]:
            numeric = row[table.numeric_from:]
            assert all(cell == "" or float(cell) == float(cell) or cell == "nan" for cell in numeric), row
            assert not any("±" in cell for cell in row)
        assert rows[1][table.numeric_from] in ("", "0.2")               # full's AbsRel, or empty (Table 2)
