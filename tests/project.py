"""The project as a user's clone has it, copied into a temporary folder for the end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN_OUTPUTS = ("data/", "metrics/", "models/", "dvclive/")  # what a run makes: never copied


def copy_tracked(dest: Path, keep_lock: bool = False) -> Path:
    """Copy every file git tracks or would track (not ignored) to ``dest``, without the run's outputs and,
    unless ``keep_lock``, without dvc.lock."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith(RUN_OUTPUTS) and (keep_lock or f != "dvc.lock"):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    return dest
