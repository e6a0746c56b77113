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
# "[enforce fail at inline_container.cc:...] . PytorchStreamWriter failed writing file data/0: file write failed"
_TORCH_WRITE_FAILED = ("file write failed", "PytorchStreamWriter failed writing")


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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A full disk, while the block writes or when the temporary file is made, raises :class:`DiskFullError`
    naming ``path``; the temporary file is always removed.
    """
    path = Path(path)
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
