"""Atomic writes, hashes, manifests and the progress switch shared by the library and the stages.

Nothing is half-written on interruption: every writer goes through :func:`atomic_path`. A full disk
(``ENOSPC``, a quota, or torch's "file write failed") is reported as :class:`DiskFullError` naming the file
that could not be written; its temporary file is removed and the previous file, if any, stays intact.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@functools.lru_cache(maxsize=None)
def file_mode() -> int:
    """The permissions ``open()`` gives a new file under the process's umask (read once)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def cpu_count() -> int:
    """Cores this process may use (the affinity mask: a container or ``taskset`` limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def progress_enabled() -> bool:
    """tqdm bars on a terminal, quiet in CI and logs (stderr not a TTY, or ``CI`` set)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


class DiskFullError(OSError):
    """A write failed for lack of disk space (or quota); the message names the file. ``errno`` is ENOSPC."""

    def __init__(self, message: str, filename: str):
        super().__init__(errno.ENOSPC, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


_DISK_FULL_ERRNOS = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
# torch.save reports a failed write of its C++ zip writer as a RuntimeError without errno or path:
# "[enforce fail at inline_container.cc:...] . PytorchStreamWriter failed writing file data/0: file write failed",
# or, when the disk fills while the zip's central directory is written,
# "[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 960"
_TORCH_WRITE_FAILED = ("file write failed", "PytorchStreamWriter failed writing", "unexpected pos")


def disk_full_error(path: str | Path, exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``path`` when ``exc`` means the disk is full, else None."""
    if isinstance(exc, DiskFullError):
        return None  # already reworded (nested writers)
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        why = exc.strerror or str(exc)
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
        why = f"torch.save: {' '.join(str(exc).split())}"
    else:
        return None
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(_existing_parent(path)).free / 1e6:.1f} MB free there now"
    except OSError:
        free = "free space unknown"
    return DiskFullError(f"{path}: cannot write it, the disk is full ({why}; {free}). Nothing was "
                         "half-written (a previous version of the file, if any, is intact); free some space "
                         "or point the output elsewhere, then rerun", str(path))


def _existing_parent(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


# ------------------------------------------------------------------------------------------ path safety

class PathEscapeError(ValueError):
    """A path built from a list line or a frame would leave the folder it belongs in; the message names it."""


class ReadOnlyTreeError(PermissionError):
    """A write was attempted inside a tree psdif only reads (the user's KITTI copy); the message names both."""

    def __init__(self, message: str, filename: str):
        super().__init__(errno.EACCES, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


def relative_parts(rel: str | Path, what: str = "path") -> tuple[str, ...]:
    """The components of a relative path that stays where it is joined: not absolute, no ``..``, no ``.``,
    no empty component (``a//b``), no backslash or NUL. Raises :class:`PathEscapeError` saying what is
    allowed."""
    text = str(rel)
    allowed = ("allowed: a relative path of plain names separated by '/' (no leading '/', no '..', "
               "no '.', no empty component)")
    if not text:
        raise PathEscapeError(f"{what}: empty path; {allowed}")
    why = None
    if text.startswith("/") or Path(text).is_absolute() or (len(text) > 2 and text[0].isalpha()
                                                             and text[1] == ":" and text[2] in "/\\"):
        why = "is absolute"
    elif "\\" in text or "\0" in text:
        why = "contains a backslash or NUL character"
    else:
        parts = text.split("/")
        if any(part == ".." for part in parts):
            why = "has a '..' component"
        elif any(part == "." for part in parts):
            why = "has a '.' component"
        elif any(part == "" for part in parts):
            why = "has an empty component ('//' or a trailing '/')"
        else:
            return tuple(parts)
    raise PathEscapeError(f"{what}: {text!r} {why}; {allowed}")


def inside(path: str | Path, root: str | Path) -> bool:
    """``path`` resolves (symbolic links followed) to ``root`` or below it (``root`` resolved as well)."""
    real, top = Path(path).resolve(), Path(root).resolve()
    return real == top or top in real.parents


def join_under(root: str | Path, *parts: str | Path, what: str = "output") -> Path:
    """``root / parts...`` checked to stay under ``root``: every part is relative without ``..`` (see
    :func:`relative_parts`) and the result, symbolic links followed, lies inside ``root``. The one joiner
    of every output path built from a frame (pseudo-labels, boundary masks, prepared arrays)."""
    root = Path(root)
    path = root
    for part in parts:
        path = path.joinpath(*relative_parts(part, f"{what} under {root}"))
    if not inside(path, root):
        raise PathEscapeError(f"{what} {path}: resolves to {path.resolve()}, outside {root} "
                              f"({root.resolve()}) through a symbolic link; remove the link")
    return path


_READ_ONLY: dict[Path, str] = {}    # resolved root -> what it is (for the message)
_WRITABLE: list[Path] = []          # resolved folders inside a read-only root where writing is allowed now


def protect_tree(root: str | Path, what: str) -> None:
    """Refuse every write of :func:`atomic_path` (hence of every psdif writer) inside ``root`` from now on.

    Stages call it at start for a user-owned tree (``data.raw_root`` with ``data.source: kitti``)."""
    _READ_ONLY[Path(root).resolve()] = what


def unprotect_all() -> None:
    """Forget every :func:`protect_tree` (tests; a process that runs several stages)."""
    _READ_ONLY.clear()


@contextmanager
def writes_allowed(folder: str | Path) -> Iterator[None]:
    """Allow writes inside ``folder`` while the block runs, even inside a protected tree (the download
    stage extracting a fetched archive into the KITTI copy's staging folder)."""
    folder = Path(folder).resolve()
    _WRITABLE.append(folder)
    try:
        yield
    finally:
        _WRITABLE.remove(folder)


def check_writable(path: str | Path) -> None:
    """Raise :class:`ReadOnlyTreeError` when ``path`` lies inside a tree given to :func:`protect_tree`."""
    if not _READ_ONLY:
        return
    real = Path(path).resolve()
    for top, what in _READ_ONLY.items():
        if real == top or top in real.parents:
            if any(real == w or w in real.parents for w in _WRITABLE):
                return
            raise ReadOnlyTreeError(
                f"{path}: refused to write it: it lies inside {what} ({top}), which psdif only "
                "reads. A path from a split list or a param points into that tree; fix the list or param so "
                "that outputs stay under data/", str(path))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A full disk, while the block writes or when the temporary file is made, raises :class:`DiskFullError`
    naming ``path``; the temporary file is always removed. A ``path`` inside a tree given to
    :func:`protect_tree` (the user's KITTI copy) raises :class:`ReadOnlyTreeError` before anything is made.
    """
    path = Path(path)
    check_writable(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 files; results get the user's usual permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        full = disk_full_error(path, exc)
        if full is not None:
            raise full from exc
        raise
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def remove_stale_temporaries(root: str | Path) -> int:
    """Delete the temporary files (``.<name>.<random>.tmp``) that a killed writer left under ``root``.

    They are never read as results (a finished write renames them), so a resumed stage removes them first.
    """
    n = 0
    for tmp in Path(root).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            n += 1
    return n


def prepare_output_tree(root: str | Path, config: str, redo: str) -> None:
    """Make ``root`` ready for a resumable stage whose finished files are skipped on a rerun.

    ``config`` is a hash of everything the files depend on, kept in ``root/.config``: when it differs
    from the stored one the whole tree is deleted (``redo`` says what happens next), so no file made
    under another configuration is trusted. Temporary files of an interrupted run are removed.
    """
    import shutil

    root = Path(root)
    stamp = root / ".config"
    if root.exists() and (not stamp.exists() or stamp.read_text() != config):
        print(f"{root}: configuration changed, {redo}")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if removed := remove_stale_temporaries(root):
        print(f"{root}: removed {removed} temporary files of an interrupted run")
    atomic_write_text(stamp, config)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run the stage that writes it: `dvc repro`)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` through a temporary file, flushed to disk before the rename: the previous file stays
    intact until the new one is complete (checkpoints, models)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def params_hash(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_manifest(root: str | Path, pattern: str = "**/*", content: bool = True) -> dict:
    """Relative path -> fingerprint of every file under ``root`` matching ``pattern`` (hidden files skipped).

    content=True: the MD5 of the bytes (generated data, labels, masks: any change is seen); content=False:
    ``"<size>:<mtime_ns>"`` (a real KITTI copy, too large to read on every run: an edit that keeps both the
    size and the modification time is not seen).
    """
    root = Path(root)
    files = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if content:
        return {str(p.relative_to(root)): md5_file(p) for p in files}
    out = {}
    for p in files:
        st = p.stat()
        out[str(p.relative_to(root))] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


class TreeCheck:
    """What :func:`check_tree` found in a stage's output tree (relative paths, sorted).

    kept: recorded in the previous manifest and still equal to the record; unrecorded: present but not in
    the manifest (written by an interrupted run of the same configuration, or no manifest yet); missing /
    changed: recorded but gone / different (a changed file has been deleted); new: neither recorded nor
    present; stray: present but not an expected file (deleted); outdated: present but made from an input
    that changed since (deleted). ``todo``: what the stage must (re)make.
    """

    def __init__(self, recorded: bool, kept, unrecorded, missing, changed, new, stray, outdated=()):
        self.recorded = recorded
        self.kept, self.unrecorded, self.missing = sorted(kept), sorted(unrecorded), sorted(missing)
        self.changed, self.new, self.stray = sorted(changed), sorted(new), sorted(stray)
        self.outdated = sorted(outdated)

    @property
    def todo(self) -> list[str]:
        return sorted(self.missing + self.changed + self.new + self.outdated)

    def report(self, stage: str, noun: str, redo: str) -> str:
        """One line: ``"pseudolabel: 188 labels kept, 2 missing and 1 changed since the manifest: relabelling 3"``."""
        def n(count: int, word: str = noun) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        if self.recorded:
            line = (f"{stage}: {n(len(self.kept))} kept, {len(self.missing)} missing and {len(self.changed)} "
                    "changed since the manifest")
            if self.unrecorded:
                line += f", {n(len(self.unrecorded))} of an interrupted run kept"
        else:
            line = f"{stage}: no manifest of this configuration yet, {n(len(self.unrecorded))} on disk kept"
        if self.outdated:
            line += f", {n(len(self.outdated))} made from an input that changed since"
        if self.new:
            line += f", {len(self.new)} not made yet"
        if self.stray:
            line += f", {n(len(self.stray), 'stray file')} removed"
        return line + (f": {redo} {len(self.todo)}" if self.todo else ": nothing to redo")


def check_tree(root: str | Path, expected, record: dict | None, pattern: str = "**/*", content: bool = True,
               workers: int | None = None, outdated=()) -> TreeCheck:
    """Compare a resumable stage's output tree with the manifest of its previous run, before it skips files.

    expected: the relative paths (as :func:`tree_manifest` writes them) the stage makes; record: the
    ``files`` of the previous manifest when it was made under the same configuration, else None. Each
    recorded file present is fingerprinted as the manifest did (``content``: MD5 of the bytes, hashed by
    ``workers`` threads; else size and mtime) and compared; a file that differs is deleted, as is a file
    matching ``pattern`` that the stage does not make, so that the stage redoes exactly what is missing or
    changed and its next manifest lists only files it wrote or verified. outdated: expected files the caller
    knows were made from an input that has changed since; those present are deleted too.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = Path(root)
    on_disk = {str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file() and not p.name.startswith(".")}
    expected = set(expected)
    outdated = expected & on_disk & set(outdated)
    for rel in outdated:
        (root / rel).unlink(missing_ok=True)
    on_disk -= outdated
    stray = on_disk - expected
    for rel in stray:
        (root / rel).unlink(missing_ok=True)
    listed = {} if record is None else record
    verify = sorted(rel for rel in expected & on_disk if rel in listed)

    def fingerprint(rel: str) -> str:
        if content:
            return md5_file(root / rel)
        st = (root / rel).stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    with ThreadPoolExecutor(workers or cpu_count()) as pool:
        prints = dict(zip(verify, pool.map(fingerprint, verify)))
    changed = [rel for rel in verify if prints[rel] != listed[rel]]
    for rel in changed:
        (root / rel).unlink(missing_ok=True)
    return TreeCheck(record is not None, kept=[rel for rel in verify if prints[rel] == listed[rel]],
                     unrecorded=[rel for rel in expected & on_disk if rel not in listed],
                     missing=[rel for rel in expected - on_disk - outdated if rel in listed], changed=changed,
                     new=[rel for rel in expected - on_disk - outdated if rel not in listed], stray=stray,
                     outdated=outdated)


def previous_record(manifest: str | Path, config: str, key: str = "files") -> dict | None:
    """``manifest[key]`` when ``manifest`` exists, is readable and was written under ``config``, else None."""
    manifest = Path(manifest)
    if not manifest.is_file():
        return None
    try:
        previous = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("config") != config or not isinstance(previous.get(key), dict):
        return None
    return previous[key]
