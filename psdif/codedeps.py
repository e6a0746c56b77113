"""The import graph of the ``psdif`` package, read from the source (``ast``: module-level imports and imports
inside functions alike), and a script's code dependencies: the script and every psdif file it imports,
transitively. One walker for the three users: the generated dvc.yaml (``psdif.pipeline``: a stage's code
dependencies), the train stage's run key (``psdif.train.code_inputs``) and the layer rules of
``tests/test_imports.py``."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_file(name: str, root: Path = REPO) -> Path | None:
    """``psdif.data.kitti`` -> ``<root>/psdif/data/kitti.py`` (or the package's ``__init__.py``); None if absent."""
    base = root / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path = REPO) -> str:
    """``<root>/psdif/data/__init__.py`` -> ``psdif.data``."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> list[tuple[str, list[str]]]:
    """Each import statement of ``path`` (anywhere) as ``(module, names)``: ``import a.b`` gives ``("a.b", [])``,
    ``from a import b, c`` gives ``("a", ["b", "c"])``; relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(root).with_suffix("")
    package = ".".join(rel.parts[:-1] if rel.name != "__init__" else rel.parts)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.append((base, [a.name for a in node.names]))
    return [(m, names) for m, names in found if m.split(".")[0] == "psdif"]


def imported_names(path: Path, root: Path = REPO) -> set[str]:
    """The dotted ``psdif`` names ``path`` imports anywhere: ``import a.b`` gives ``a.b``, ``from a import b``
    gives ``a`` and ``a.b`` (``b`` may be a module or a name inside ``a``)."""
    return {n for module, names in _imports(path, root) for n in (module, *(f"{module}.{b}" for b in names))}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """``{module: the psdif modules it imports}`` for every module of the package: an edge per module named in
    an import (``from a import b`` is an edge to ``a.b`` when that is a module, else to ``a``)."""
    files = {module_name(p, root): p for p in (root / "psdif").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = set()
        for module, names in _imports(path, root):
            subs = [f"{module}.{b}" for b in names]
            edges |= {s if s in files else module for s in subs} if subs else {module}
        graph[name] = {m for m in edges if m in files and m != name}
    return graph


def _loaded_files(path: Path, root: Path) -> set[Path]:
    """The files that run when ``path`` runs its imports: each imported module and its parent packages
    (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first)."""
    found = set()
    for name in imported_names(path, root):
        parts = name.split(".")
        found |= {f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]), root))}
    return found


def code_deps(script: str | Path, root: Path = REPO) -> list[str]:
    """The script and every psdif source file it imports, transitively, as sorted repository-relative paths
    (the script first)."""
    todo = [root / script]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += _loaded_files(path, root)
    script_path = (root / script).resolve()
    return [str(Path(script))] + sorted(str(p.relative_to(root)) for p in seen if p.resolve() != script_path)
