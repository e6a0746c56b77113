"""tables stage: metrics/eval/*.json -> metrics/tables/table{1,2,3}.{md,csv} (this run beside the paper),
and metrics/coverage.json: how much of the train / val / test lists the run found on disk (from the filter's
and the GT export's reports), which the tables quote."""

from __future__ import annotations

from pathlib import Path

from psdif.evaluation.tables import write_tables
from psdif.paths import COVERAGE, EXPORT_GT_REPORT, FILTER_REPORT
from psdif.reports import read_report, write_report
from psdif.stage import stage_args


def _extra(parser) -> None:
    parser.add_argument("--eval-dir", default="metrics/eval", help="evaluate stage output (default: %(default)s)")
    parser.add_argument("--out-dir", default="metrics/tables", help="where the tables go (default: %(default)s)")


def gather_coverage(filter_report: Path, export_report: Path) -> dict | None:
    """``{"train": ..., "val": ..., "test": ...}`` coverage entries from the two reports (None: neither exists)."""
    cover = {}
    if filter_report.is_file():
        cover.update(read_report(filter_report).get("coverage", {}))
    if export_report.is_file():
        report = read_report(export_report)
        cover["test"] = {k: report[k] for k in ("list", "listed", "used", "missing", "missing_by_reason",
                                                 "first_missing") if k in report}
    return cover or None


def main(argv=None) -> None:
    _, args = stage_args("tables", argv, extra=_extra)
    cover = gather_coverage(Path(FILTER_REPORT), Path(EXPORT_GT_REPORT))
    if cover is not None:
        write_report(COVERAGE, cover)
        print(f"wrote {COVERAGE}")
    for path in write_tables(Path(args.eval_dir), Path(args.out_dir), coverage=cover):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
