"""tables stage: metrics/eval/*.json -> metrics/tables/table{1,2,3}.{md,csv} (this run beside the paper)."""

from __future__ import annotations

from pathlib import Path

from psdif.stage import stage_args
from psdif.evaluation.tables import run_labels, write_tables


def _extra(parser) -> None:
    parser.add_argument("--eval-dir", default="metrics/eval", help="evaluate stage output (default: %(default)s)")
    parser.add_argument("--out-dir", default="metrics/tables", help="where the tables go (default: %(default)s)")


def main(argv=None) -> None:
    p, args = stage_args("tables", argv, extra=_extra)
    kitti_label, make3d_label = run_labels(p.data.source, p.eval.make3d_root)
    for path in write_tables(Path(args.eval_dir), Path(args.out_dir), kitti_label, make3d_label):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
