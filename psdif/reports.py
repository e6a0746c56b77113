"""Stage reports as DVC sees them: a metrics file of numbers only, and what describes them beside it.

``dvc metrics show`` / ``dvc exp show`` turn every leaf of a metrics file into a column; a string (a data
label, a list path), a list or a flag among them is noise in those views and breaks ``dvc metrics diff``.
So a stage report is written as two files (psdif/pipeline.py, "What DVC shows"; README, "Stages"):

- ``<name>.json``: the numbers of the report (int or float, nested in objects), the declared metric;
- ``<name>.about.json``: everything else at the same place in the tree (labels, split names, paths, lists,
  flags, ``null``), a plain output of the stage, never a metric.

:func:`read_report` puts the two back together, so a reader sees the report as its stage built it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psdif.io import read_json, write_json

ABOUT_SUFFIX = ".about.json"


def is_number(value: Any) -> bool:
    """A JSON number DVC can show and diff: int or float, not bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def about_path(path: str | Path) -> Path:
    """``metrics/eval/full.json`` -> ``metrics/eval/full.about.json``."""
    path = Path(path)
    return path.with_name(path.stem + ABOUT_SUFFIX)


def split_report(report: dict) -> tuple[dict, dict]:
    """(numbers, about): the report's number leaves, and every other leaf, each at its place in the tree.

    Objects recurse; an object left without leaves on one side is dropped from that side.
    """
    numbers, about = {}, {}
    for key, value in report.items():
        if isinstance(value, dict):
            sub_numbers, sub_about = split_report(value)
            if sub_numbers:
                numbers[key] = sub_numbers
            if sub_about or not value:
                about[key] = sub_about
        elif is_number(value):
            numbers[key] = value
        else:
            about[key] = value
    return numbers, about


def merge_report(numbers: dict, about: dict) -> dict:
    """The inverse of :func:`split_report` (numbers' key order first)."""
    out = dict(numbers)
    for key, value in about.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_report(out[key], value)
        elif key in out:
            raise ValueError(f"key {key!r} is in both the metrics file and its {ABOUT_SUFFIX} file")
        else:
            out[key] = value
    return out


def write_report(path: str | Path, report: dict) -> tuple[Path, Path]:
    """Write ``path`` (numbers only) and its :func:`about_path` (the rest), each atomically."""
    numbers, about = split_report(report)
    path = Path(path)
    write_json(about_path(path), about)
    write_json(path, numbers)
    return path, about_path(path)


def read_report(path: str | Path) -> dict:
    """A report written by :func:`write_report`, whole again. A file without its about file (written
    before reports were split) reads as it is."""
    path = Path(path)
    numbers = read_json(path)
    about = about_path(path)
    if not about.exists() or not isinstance(numbers, dict):
        return numbers
    extra = read_json(about)
    if not isinstance(extra, dict):
        raise ValueError(f"{about}: must be a JSON object, got {type(extra).__name__}; re-run `dvc repro`")
    try:
        return merge_report(numbers, extra)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; re-run `dvc repro`") from None
