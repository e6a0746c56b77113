"""Atomic writes and the clean-up of what a killed writer leaves."""

from __future__ import annotations

from psdif.io import atomic_write_text, remove_stale_temporaries


def test_remove_stale_temporaries_leaves_results(tmp_path):
    atomic_write_text(tmp_path / "a" / "keep.png", "x")
    (tmp_path / "a" / ".keep2.png.abc123.tmp").write_text("half")  # what a SIGKILLed writer leaves
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".x.tmp").write_text("half")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.png"]


def test_atomic_writes_get_the_umask_permissions_not_0600(tmp_path):
    """Files written through a temporary file get what a plain open() would give (labels were 0600)."""
    import os

    import numpy as np

    from psdif.data.images import write_png
    from psdif.io import file_mode

    old = os.umask(0o022)
    file_mode.cache_clear()
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_png(tmp_path / "l.png", np.zeros((2, 2), np.uint8))
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
        file_mode.cache_clear()
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "l.png").stat().st_mode & 0o777 == 0o644
