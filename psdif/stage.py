"""The shared entry of the stage scripts (``stages/*.py``): parse the command line, validate params.yaml.

Run from its command line (``argv`` None: ``python stages/<name>.py``, as ``dvc repro`` runs it), the stage's
process is set up first (``psdif.process.start_stage``): timestamped log lines, progress lines without a
terminal, exit with its parent, one line and exit status 130 / 143 on Ctrl-C / SIGTERM.

Kept apart from the ``psdif`` command (``psdif.cli``) so that a stage's code dependencies, which dvc.yaml
derives from what its script imports (``psdif.pipeline``), do not include the command's other subcommands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from psdif.config import Params, ParamsError, load_params


def _run_as_script(stage: str) -> bool:
    """Whether this process runs ``stages/<stage>.py`` itself (the train stage passes its argv on)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is not None and Path(main).name == f"{stage}.py" and Path(main).parent.name == "stages"


def stage_args(stage: str, argv=None, extra=None) -> tuple[Params, argparse.Namespace]:
    """Parse a stage's command line and validate params.yaml; a bad key exits with its name."""
    if argv is None or _run_as_script(stage):  # the stage's own process (not a test calling its main)
        from psdif.process import start_stage
        start_stage(stage)
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    if params.data.source == "kitti":  # the user's copy: no psdif writer may open a file in it
        from psdif.io import protect_tree
        protect_tree(params.data.raw_root, "data.raw_root, your KITTI copy (data.source: kitti)")
    return params, args
