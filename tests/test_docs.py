"""docs/reliability.md names, for every fault, the test that tries it: each named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tests_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.name.startswith("test")}


def test_every_test_named_in_reliability_md_exists():
    text = (REPO / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)", text)
    assert len(named) > 50  # the table's rows (a broken pattern would find none)
    missing = [f"{f}::{t}" for f, t in named
               if not (REPO / "tests" / f).is_file() or t not in _tests_of(REPO / "tests" / f)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
