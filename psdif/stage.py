"""The shared entry of the stage scripts (``stages/*.py``): parse the command line, validate params.yaml.

Kept apart from the ``psdif`` command (``psdif.cli``) so that a stage's code dependencies, which dvc.yaml
derives from what its script imports (``psdif.pipeline``), do not include the command's other subcommands.
"""

from __future__ import annotations

import argparse
import sys

from psdif.config import Params, ParamsError, load_params


def stage_args(stage: str, argv=None, extra=None) -> tuple[Params, argparse.Namespace]:
    """Parse a stage's command line and validate params.yaml; a bad key exits with its name."""
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
