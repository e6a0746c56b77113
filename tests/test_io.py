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
