"""Tables 1–3: the paper's rows verbatim, this run's rows from metrics/eval JSONs, "not run" for gaps."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from psdif.evaluation.tables import (NOT_RUN, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, PUBLISHED, REAL_KITTI,
                          build_tables, write_tables)

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO.parent / "shared" / "paper" / "paper.txt"

RUN = dict(abs_rel=0.23456, sq_rel=1.5, rmse=6.1, rmse_log=0.28, a1=0.7, a2=0.9, a3=0.95,
           ratio_median=30.2, ratio_std=0.08, n_images=80,
           dataset="generated mini-KITTI (embedded default)", test_split="synth_eigen", test_listed=80,
           test_set="0a1b2c3d")   # what the evaluate stage records beside the metrics
M3D = dict(abs_rel=0.51, sq_rel=5.25, rmse=9.0, rmse_log=0.2, n_images=24)


def _eval_dir(tmp_path: Path) -> Path:
    d = tmp_path / "metrics" / "eval"
    d.mkdir(parents=True)
    (d / "full.json").write_text(json.dumps(dict(RUN, make3d=M3D)))
    (d / "baseline.json").write_text(json.dumps(dict(RUN, abs_rel=0.3)))
    (d / "make3d_baseline.json").write_text(json.dumps(dict(M3D, abs_rel=0.61)))
    (d / "flat.json").write_text(json.dumps(dict(RUN, abs_rel=0.4)))
    return d  # msfan, msfan_seg, msfan_seg_psdifm, untrained: not run


def _md_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_paper_rows_match_the_paper_text():
    """Each published row, printed the paper's way (method + Sup + 3-decimal numbers run together), is a
    line of paper.txt; and the numbers design.md §5 quotes are there."""
    if not PAPER.exists():
        pytest.skip(f"paper text not found at {PAPER}")
    lines = set(PAPER.read_text(encoding="utf-8").splitlines())
    for table, n in ((PAPER_TABLE1, 18), (PAPER_TABLE2, 7), (PAPER_TABLE3, 5)):
        assert len(table) == n
        for row in table:
            printed = row.method + row.sup + "".join(f"{v:.3f}" for v in row.values)
            assert printed in lines, printed
    t1 = {r.method: r.values for r in PAPER_TABLE1}
    assert t1["Ours"] == (0.101, 0.718, 4.376, 0.176, 0.896, 0.966, 0.984)
    assert t1["FSRE [21]"] == (0.102, 0.675, 4.393, 0.178, 0.893, 0.964, 0.984)
    assert {r.method: r.values for r in PAPER_TABLE2}["Monodepth2 [6]"] == (0.344, 4.065, 7.920, 0.197)
    assert [r.values[0] for r in PAPER_TABLE3] == [0.109, 0.107, 0.107, 0.103, 0.101]
    assert [r.variant for r in PAPER_TABLE3] == ["baseline", "msfan", "msfan_seg", "msfan_seg_psdifm", "full"]


def test_write_tables_rows_and_not_run(tmp_path):
    out = tmp_path / "metrics" / "tables"
    written = write_tables(_eval_dir(tmp_path), out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"table{i}.{ext}" for i in (1, 2, 3) for ext in ("md", "csv"))          # no temp files left
    assert set(written) == set(out.iterdir())

    t1 = _md_rows((out / "table1.md").read_text(encoding="utf-8"))
    assert len(t1) == 4 + 18
    assert all(r[2] == "this run — generated mini-KITTI (embedded default), test split synth_eigen"
               for r in (t1[0], t1[1], t1[3]))                                   # this run first
    assert t1[2][2] == "this run"                                                 # untrained: not run
    assert "different test sets" not in (out / "table1.md").read_text(encoding="utf-8")
    assert all(r[2] == PUBLISHED for r in t1[4:])
    full = t1[0]
    assert full[3:13] == ["0.235", "1.500", "6.100", "0.280", "0.700", "0.900", "0.950", "30.200", "0.080", "80"]
    assert t1[1][3] == "0.300"                                                    # baseline
    assert t1[2][3:] == [NOT_RUN] * 10                                            # untrained: no file
    ours = next(r for r in t1 if r[0] == "Ours")
    assert ours[1:10] == ["Seg", PUBLISHED, "0.101", "0.718", "4.376", "0.176", "0.896", "0.966", "0.984"]

    t2 = _md_rows((out / "table2.md").read_text(encoding="utf-8"))
    assert [r[3] for r in t2[:4]] == ["0.510", "0.610", NOT_RUN, NOT_RUN]        # key inside, separate file
    assert t2[0][-1] == "24"
    assert [r[0] for r in t2[4:]] == [r.method for r in PAPER_TABLE2]

    t3 = _md_rows((out / "table3.md").read_text(encoding="utf-8"))
    assert len(t3) == 10
    assert [r[2] for r in t3[:5]] == ["0.300", NOT_RUN, NOT_RUN, NOT_RUN, "0.235"]
    assert [r[2] for r in t3[5:]] == ["0.109", "0.107", "0.107", "0.103", "0.101"]

    with open(out / "table1.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["Method", "Sup", "Data", "AbsRel"]
    assert float(rows[1][3]) == RUN["abs_rel"]                                    # full precision in CSV
    assert len(rows) == 1 + 22


def test_markdown_pipes_are_aligned(tmp_path):
    for table in build_tables(_eval_dir(tmp_path)):
        lines = [ln for ln in table.markdown().splitlines() if ln.startswith("|")]
        pipes = {tuple(i for i, ch in enumerate(ln) if ch == "|") for ln in lines}
        assert len(pipes) == 1, table.name                                        # same columns everywhere
        assert set(lines[1]) <= set("|-: ")
        if table.name != "table2":
            assert "this run — generated mini-KITTI (embedded default), test split synth_eigen" in table.markdown()


def test_dataset_label_from_json_and_bad_files(tmp_path):
    d = _eval_dir(tmp_path)
    (d / "full.json").write_text(json.dumps(dict(RUN, dataset="KITTI Eigen (subset)")))
    tables = build_tables(d, "generated mini-KITTI (embedded default)", "x")
    assert tables[0].rows[0][2] == "this run — KITTI Eigen (subset), test split synth_eigen"

    (d / "msfan.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"msfan\.json.*malformed"):
        build_tables(d, "a", "b")
    (d / "msfan.json").write_text(json.dumps({k: v for k, v in RUN.items() if k != "a3"}))
    with pytest.raises(ValueError, match=r"msfan\.json.*a3"):
        build_tables(d, "a", "b")
    (d / "msfan.json").write_text(json.dumps(dict(RUN, rmse="big")))
    with pytest.raises(ValueError, match=r"msfan\.json.*rmse"):
        build_tables(d, "a", "b")


def test_tables_stage_script(tmp_path):
    d = _eval_dir(tmp_path)
    out = tmp_path / "tables"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "tables.py"), "--params",
                           str(REPO / "psdif" / "presets" / "embedded.yaml"), "--eval-dir", str(d),
                           "--out-dir", str(out)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (out / "table3.md").read_text(encoding="utf-8")
    assert "generated mini-KITTI (embedded default)" in text and "0.109" in text
    assert not (tmp_path / "metrics" / "coverage.json").exists()  # no filter / export_gt report: no coverage


def test_rows_of_different_test_sets_are_never_one_table_without_saying_so(tmp_path):
    """A real run's full row (5 KITTI frames) beside rows left over from an embedded run (80 generated frames):
    each row says what it measured, and the title and a note say they are not comparable."""
    d = _eval_dir(tmp_path)
    (d / "full.json").write_text(json.dumps(dict(RUN, dataset=REAL_KITTI, test_split="eigen", n_images=5,
                                                 test_listed=697, test_set="99999999",
                                                 make3d={"not_run": "no Make3D Test134 images under data/make3d"})))
    t1, t2, t3 = build_tables(d)
    for table, others in ((t1, "baseline, flat"), (t3, "baseline")):
        assert "different test sets" in table.title
        note = next(n for n in table.notes if n.startswith("WARNING"))
        assert "full: KITTI raw, test split eigen, 5 images (frames 99999999)" in note
        assert f"{others}: generated mini-KITTI (embedded default), test split synth_eigen, 80 images" in note
    assert t1.rows[0][2] == "this run — KITTI raw, test split eigen, 5 of 697 listed frames"
    assert t1.rows[1][2] == "this run — generated mini-KITTI (embedded default), test split synth_eigen"
    assert t2.rows[0][3] == NOT_RUN and t2.rows[0][2] == "this run"
    assert "Make3D not run: no Make3D Test134 images under data/make3d." in t2.notes


def test_results_that_do_not_record_their_data_are_not_labelled_from_params(tmp_path):
    d = _eval_dir(tmp_path)
    legacy = {k: v for k, v in RUN.items() if k not in ("dataset", "test_split", "test_listed", "test_set")}
    (d / "full.json").write_text(json.dumps(legacy))
    t1 = build_tables(d)[0]
    assert t1.rows[0][2].startswith("this run — data not recorded")
    assert "different test sets" in t1.title                                      # unknown != synth_eigen


def test_coverage_note_from_the_reports(tmp_path):
    cover = {"train": {"listed": 4, "used": 3, "missing": 1, "missing_by_reason": {"drive not on disk": 1},
                       "first_missing": ["2011_09_26/2011_09_26_drive_0002_sync 3 l (drive not on disk)"]},
             "val": {"listed": 0, "used": 0, "missing": 0, "missing_by_reason": {}, "first_missing": []},
             "test": {"listed": 697, "used": 2, "missing": 695, "missing_by_reason": {"drive not on disk": 695},
                      "first_missing": []}}
    t1 = build_tables(_eval_dir(tmp_path), coverage=cover)[0]
    note = next(n for n in t1.notes if n.startswith("Coverage"))
    assert "3 of 4 listed train lines (not used: 1 drive not on disk)" in note
    assert "2 of 697 listed test frames (not used: 695 drive not on disk)" in note


def test_a_collapsed_seed_is_named_under_tables_1_and_3(tmp_path):
    """A run whose network predicts one depth (disp_spread ~ 0, as the evaluate stage measures it) is named in a
    note; healthy runs, the flat reference and files without the key add nothing."""
    d = _eval_dir(tmp_path)
    tables = {t.name: t.markdown() for t in build_tables(d)}
    assert "COLLAPSED" not in tables["table1"] + tables["table3"]
    (d / "flat.json").write_text(json.dumps(dict(RUN, abs_rel=0.4, disp_spread=0.0)))  # a reference, not a run
    (d / "full.json").write_text(json.dumps(dict(RUN, disp_spread=0.31)))
    (d / "msfan_seg.json").write_text(json.dumps(dict(
        RUN, disp_spread=0.15, n_seeds=2,
        per_seed={"seed0": dict(RUN, disp_spread=8e-9), "seed1": dict(RUN, disp_spread=0.3)})))
    tables = {t.name: t.markdown() for t in build_tables(d)}
    note = [ln for ln in tables["table3"].splitlines() if "COLLAPSED" in ln]
    assert len(note) == 1 and "msfan_seg seed0 (disparity spread 8.0e-09)" in note[0]
    assert "seed1" not in note[0] and "full" not in note[0].split("predicts")[0] and "flat" not in note[0]
    assert "COLLAPSED" not in tables["table1"]  # Table 1 shows full and baseline only
    (d / "full.json").write_text(json.dumps(dict(RUN, disp_spread=2e-4)))
    assert "COLLAPSED: full (disparity spread 2.0e-04)" in build_tables(d)[0].markdown()


def test_table3_boundary_columns_from_dense_gt_and_sparse_gt_says_so(tmp_path):
    """full has a ``boundary`` group (dense GT): its three figures; a file without one says why, never zeros:
    'n/a (sparse GT)' on real KITTI, 'not recorded' on generated data (an older evaluate); a row not run stays
    'not run'; the paper's rows are blank."""
    from psdif.evaluation.tables import BOUNDARY_HEADERS, SPARSE_GT

    d = _eval_dir(tmp_path)
    boundary = {"dbe_acc": 2.25, "dbe_comp": 4.5, "band_abs_rel": 0.375, "off_band_abs_rel": 0.125,
                "per_class": {"road": {"abs_rel": 0.1, "a1": 0.9}}}
    (d / "full.json").write_text(json.dumps(dict(RUN, make3d=M3D, boundary=boundary)))
    t3 = next(t for t in build_tables(d) if t.name == "table3")
    assert t3.header[-3:] == list(BOUNDARY_HEADERS.values())
    rows = _md_rows(t3.markdown())
    assert rows[4][-3:] == ["2.250", "4.500", "0.375"]                           # full
    assert rows[0][-3:] == ["not recorded"] * 3                                   # baseline: generated, older file
    assert rows[1][-3:] == [NOT_RUN] * 3                                          # msfan: no file
    assert all(r[-3:] == [""] * 3 for r in rows[5:])                              # published rows
    assert "iBims-1" in t3.markdown()
    (d / "baseline.json").write_text(json.dumps(dict(RUN, abs_rel=0.3, dataset=REAL_KITTI)))   # sparse GT
    rows = _md_rows(next(t for t in build_tables(d) if t.name == "table3").markdown())
    assert rows[0][-3:] == [SPARSE_GT] * 3


def test_table1_is_titled_by_the_protocol_that_was_measured(tmp_path):
    """Rows evaluated on KITTI's improved GT (eigen_benchmark) give Table 1 that title and a note that the
    paper's rows used the Eigen protocol; Eigen rows (or files that do not say) keep the Eigen title."""
    d = _eval_dir(tmp_path)
    eigen = build_tables(d)[0]
    assert eigen.title.startswith("Table 1 — Eigen protocol") and "eigen_benchmark" not in eigen.markdown()
    for name in ("full", "baseline", "flat"):
        raw = json.loads((d / f"{name}.json").read_text())
        (d / f"{name}.json").write_text(json.dumps(dict(raw, protocol="eigen_benchmark",
                                                        test_split="eigen_benchmark")))
    bench = build_tables(d)[0]
    assert bench.title.startswith("Table 1 — KITTI improved ground truth (eigen_benchmark")
    assert "test split eigen_benchmark" in bench.markdown()
    note = next(n for n in bench.notes if n.startswith("eigen_benchmark protocol"))
    assert "no Eigen crop" in note and "not comparable" in note and "WARNING" not in note
    raw = json.loads((d / "flat.json").read_text())
    (d / "flat.json").write_text(json.dumps(dict(raw, protocol="eigen")))
    mixed = build_tables(d)[0]
    assert mixed.title.startswith("Table 1 — Eigen protocol")
    assert any("WARNING: some of this run's rows used the Eigen protocol" in n for n in mixed.notes)
