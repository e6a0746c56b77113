"""summary stage: the ablation at a glance -> metrics/summary.json (the headline metrics ``dvc exp show``
leads with, and each variant's final training loss) and metrics/plots/*.csv (the data of dvc.yaml's
top-level plots: every variant's training curves on shared axes, the per-variant abs_rel bars).
See psdif.evaluation.summary."""

from __future__ import annotations

import sys
from pathlib import Path

from psdif.evaluation.summary import write_bars, write_curves, write_headline
from psdif.paths import EVAL_DIR, PLOT_DATA, SUMMARY, live_path
from psdif.stage import stage_args
from psdif.variants import VARIANTS


def main(argv=None) -> None:
    p, _ = stage_args("summary", argv)
    try:
        lives = {v: [Path(live_path(v, s)) for s in p.train.seeds] for v in VARIANTS}
        headline = write_headline(Path(EVAL_DIR), Path(SUMMARY), live_dirs=lives)
        bars = write_bars(headline, Path(PLOT_DATA))
        curves = write_curves(lives, Path(PLOT_DATA))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1)
    print(f"wrote {SUMMARY}, {bars}, {len(curves)} training-curve files in {PLOT_DATA}/")


if __name__ == "__main__":
    main()
