"""What every stage process shares: timestamped log lines, timed progress lines, folder locks, and how it ends.

The shared stage entry (``psdif.stage.stage_args``) calls :func:`start_stage` when a stage runs from its
command line (``python stages/<name>.py``, as ``dvc repro`` runs it):

- Log lines: every line the stage writes to stdout or stderr starts with the time and the stage
  (``2026-12-02 09:41:07 filter: ...``); an ``error:`` line stays as it is (it is the stage's last word, and
  tools look for it at the start of a line). Both streams are line-buffered, so a log follows the run.
- Progress: :func:`progress_bar` is tqdm on a terminal; without one (a log, CI, ``dvc repro`` piped) it
  prints one line every ``PSDIF_PROGRESS_SECONDS`` seconds (default 30): done / total, rate and ETA.
- Parent death: on Linux the kernel sends SIGTERM to the stage when its parent (``dvc repro``) dies
  (``prctl(PR_SET_PDEATHSIG)``); elsewhere a thread checks once a second that the parent is still there.
- Ctrl-C (SIGINT) and SIGTERM: one line saying what was kept and how to resume (:func:`set_resume_note`,
  e.g. training's last checkpoint), no traceback, exit status 130 / 143 (128 + the signal, as a shell says).

:func:`folder_lock` keeps two runs out of one shared folder (a download folder, a training run folder).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

PROGRESS_ENV = "PSDIF_PROGRESS_SECONDS"
PROGRESS_SECONDS = 30.0      # between two progress lines without a terminal
LOCK_NAME = ".psdif.lock"    # in a locked folder: holds the PID of the process that has it
PR_SET_PDEATHSIG = 1         # linux/prctl.h

_stage: Optional[str] = None
_resume_note: Optional[Callable[[], str]] = None
DEFAULT_NOTE = "files finished so far are kept (each is written whole or not at all); rerun `dvc repro` to resume"


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, like KeyboardInterrupt on SIGINT (``except Exception`` lets it pass)."""


class FolderLockedError(RuntimeError):
    """Another process holds the lock of a folder; the message names the folder and its PID."""


# ------------------------------------------------------------------------------------------ the stage process

def start_stage(stage: str) -> None:
    """Set up this process as the stage ``stage``: log prefixes, progress lines, parent death, interruption."""
    global _stage
    if _stage is not None:
        return
    _stage = stage
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
        setattr(sys, name, StampedStream(stream, stage))
    die_with_parent()
    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.excepthook = _interrupted_hook(sys.excepthook)
    os.register_at_fork(after_in_child=_default_signals)  # worker processes (multiprocessing, DataLoader)


def _default_signals() -> None:
    """In a forked worker: Ctrl-C (sent to the whole process group) and SIGTERM end it silently, as before the
    stage's handlers; the stage process itself says what happened, once."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stage_name() -> Optional[str]:
    return _stage


def set_resume_note(note: Optional[Callable[[], str]]) -> None:
    """What an interrupted run says it kept and how to resume (called when it is interrupted); None: the default."""
    global _resume_note
    _resume_note = note


def interruption_line(signum: int) -> str:
    """The one line of an interrupted stage (its stamp names the stage)."""
    what = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    try:
        note = _resume_note() if _resume_note else DEFAULT_NOTE
    except Exception:  # the note must never hide the interruption
        note = DEFAULT_NOTE
    return f"interrupted by {what}: {note}"


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _interrupted_hook(previous):
    def hook(kind, value, tb):
        if not issubclass(kind, (KeyboardInterrupt, Terminated)):
            return previous(kind, value, tb)
        signum = signal.SIGINT if issubclass(kind, KeyboardInterrupt) else signal.SIGTERM
        print(interruption_line(signum), file=sys.stderr)
        atexit._run_exitfuncs()  # what a normal exit runs (multiprocessing's cleanup of its workers, ...)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(128 + signum)  # finally blocks and exit handlers have run; 130 / 143 as a shell reports it
    return hook


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies: the kernel's PR_SET_PDEATHSIG on Linux, else a watcher."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the call
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------------------------------ log lines

def stamp(stage: str) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage}: "


class StampedStream:
    """A text stream whose lines start with :func:`stamp` (an ``error:`` line excepted); the rest is delegated."""

    def __init__(self, stream, stage: str):
        self._stream, self._stage, self._at_start = stream, stage, True

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_start and piece.strip() and not piece.startswith("error:"):
                out.append(stamp(self._stage))
            out.append(piece)
            self._at_start = piece.endswith(("\n", "\r"))
        self._stream.write("".join(out))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


# ------------------------------------------------------------------------------------------ progress

def progress_seconds() -> float:
    """Seconds between two progress lines: ``PSDIF_PROGRESS_SECONDS`` (a log setting, not a param), default 30."""
    raw = os.environ.get(PROGRESS_ENV)
    if not raw:
        return PROGRESS_SECONDS
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SystemExit(f"error: {PROGRESS_ENV}={raw!r} is not a number of seconds") from None


def progress_bar(iterable=None, *, disable: bool = False, **kwargs):
    """tqdm when shown (``disable`` False: a terminal); inside a stage without a terminal, a :class:`TimedProgress`
    (one line every :func:`progress_seconds`); otherwise silent. Only rank 0 of a distributed run reports."""
    from tqdm import tqdm

    if not disable:
        return tqdm(iterable, **kwargs)
    if _stage is None or int(os.environ.get("RANK", "0")) != 0:
        return tqdm(iterable, disable=True, **kwargs)
    return TimedProgress(iterable, total=kwargs.get("total"), initial=kwargs.get("initial", 0),
                         desc=kwargs.get("desc"), unit=kwargs.get("unit", "it"))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _amount(n: float, unit: str) -> str:
    if unit == "B":
        return f"{n / 2**20:.1f} MiB"
    return f"{n:g}" if isinstance(n, float) else str(n)


class TimedProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``close``, context manager) printing one line to
    stderr every ``every`` seconds: ``<desc>: <done>/<total> <unit> (<pct>), <rate> <unit>/s, ETA <time>``."""

    def __init__(self, iterable=None, total=None, initial: int = 0, desc: Optional[str] = None, unit: str = "it",
                 every: Optional[float] = None, clock: Callable[[], float] = time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.every = progress_seconds() if every is None else every
        self._clock, self._initial = clock, initial
        self._start = self._last = clock()
        self.lines = 0

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            print(self.line(now), file=sys.stderr, flush=True)
            self.lines += 1

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._initial) / elapsed
        done = f"{_amount(self.n, self.unit)}"
        if self.total:
            unit = "" if self.unit == "B" else f" {self.unit}"
            done = f"{done}/{_amount(self.total, self.unit)}{unit} ({100 * self.n / self.total:.0f} %)"
        else:
            done += "" if self.unit == "B" else f" {self.unit}"
        rate_text = f"{_amount(rate, self.unit)}/s" if self.unit == "B" else f"{rate:.3g} {self.unit}/s"
        eta = ("" if not self.total or rate <= 0 else f", ETA {_duration((self.total - self.n) / rate)}")
        return f"{self.desc or 'progress'}: {done}, {rate_text}{eta}, {_duration(elapsed)} elapsed"

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def set_description(self, desc: str, *args, **kwargs) -> None:
        self.desc = desc

    def refresh(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ locks

@contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold ``folder``'s lock (``fcntl.flock`` on ``folder/.psdif.lock``) while the block runs.

    When another process holds it: :class:`FolderLockedError` naming the folder, ``what`` it is and the PID
    holding it, before anything in the folder is touched. The kernel drops the lock when its process ends,
    so a killed run never leaves a stale lock (its file stays, holding a PID no longer locking anything); a
    released lock removes its file. Where ``fcntl`` does not exist (Windows), no lock is taken.
    """
    try:
        import fcntl
    except ImportError:
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _take(path, folder, what, fcntl)
    try:
        yield folder
    finally:
        path.unlink(missing_ok=True)  # before the unlock: a process that opened it sees it went (:func:`_take`)
        os.close(fd)


def _take(path: Path, folder: Path, what: str, fcntl) -> int:
    """An open descriptor of ``path`` holding its lock, with this PID written in it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderLockedError(f"{folder} ({what}) is in use by another process (PID {holder}); nothing was "
                                    "changed: wait for that run to finish or stop it, then run again") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else its holder removed it while we opened it: take the new one
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
