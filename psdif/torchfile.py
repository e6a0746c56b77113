"""Torch files: reading one without running what it holds, and saying how a state dict fits a module.

Every reader of a ``.pt`` / ``.pth`` here goes through :func:`load_torch` (``weights_only=True``: tensors, plain
containers and numbers; numpy scalars and dtypes only when asked, as the public checkpoints pickle them). A
file with any other Python object is refused before anything in it runs, and torch's own advice (reload with
``weights_only=False``, which would run it) is never passed on: :func:`torch_load_problem` says why in our
words. :func:`state_dict_mismatch` is the one message for a state dict that does not fit a module.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


class RefusedPickleError(ValueError):
    """A torch file holds Python objects that ``weights_only`` loading refuses; the message names the file
    and the objects (none of them was run)."""


def refused_objects(message: str) -> list[str]:
    """The Python objects a failed ``torch.load(weights_only=True)`` names in its message (``posix.system``)."""
    found = re.findall(r"(?:\bGLOBAL|Trying to call reduce for|Unsupported class) ([A-Za-z_][\w.]*)", message)
    return sorted(set(found))


def torch_load_problem(path: str | Path, exc: BaseException, what: str = "torch file") -> str:
    """Our own words for why ``torch.load(path, weights_only=True)`` failed, naming the file and, for a file
    holding pickled objects, the refused objects."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        objects = ", ".join(refused_objects(text)) or "an object outside tensors and plain containers"
        return (f"{path}: holds Python objects besides tensors and plain values ({objects}); refused to load "
                "it: unpickling them could run code, so nothing in the file was run")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return (f"{path}: not a readable {what}, probably truncated or of another format "
            f"({type(exc).__name__}: {first[:200]})")


def numpy_globals() -> list:
    """What numpy scalars, dtypes and arrays in a container need to unpickle (training metadata, the public
    DeepLabv3+ checkpoint's ``best_score``): numpy's scalar and array reconstructors under both module
    spellings (``numpy.core`` before numpy 2, ``numpy._core`` after), ``numpy.dtype`` and its per-type classes."""
    import numpy as np

    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    allowed: list = [np.dtype, np.ndarray]
    for spelling in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray.scalar, f"{spelling}.scalar"), (multiarray._reconstruct, f"{spelling}._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
    return allowed


def load_torch(path: str | Path, allow_numpy: bool = False, what: str = "torch file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` (plus numpy's scalar / dtype / array types
    with ``allow_numpy``); a file that cannot be read that way raises :class:`RefusedPickleError` (pickled
    objects, never run) or ``ValueError`` (truncated, not a torch file), both with
    :func:`torch_load_problem`'s message (``what`` names the kind of file in it)."""
    try:
        if allow_numpy:
            with torch.serialization.safe_globals(numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - reworded with the file name
        refused = isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)
        raise (RefusedPickleError if refused else ValueError)(torch_load_problem(path, exc, what)) from None


def _is_counter(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def state_dict_mismatch(own: Mapping[str, Any], state: Mapping[str, Any], what: str, limit: int = 5,
                        counters_optional: bool = True, mine: str = "module", unused: str = "unused"
                        ) -> str | None:
    """How ``state`` (from a file) fails to fit a module whose state dict is ``own``, or None when every tensor
    of ``own`` is in ``state`` with its shape and ``state`` has nothing else: ``matches N of the M <what>
    tensors (all are needed); K missing from the file (first: ...); K file tensors <unused> (first: ...);
    K with another shape (first: name: file (...) vs <mine> (...))``. BatchNorm ``num_batches_tracked``
    counters may be absent when ``counters_optional`` (old files lack them; momentum BatchNorm ignores them)."""
    needed = [k for k in own if not (counters_optional and _is_counter(k))]
    missing = [k for k in needed if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return None
    matched = sum(1 for k in needed if k in state and tuple(state[k].shape) == tuple(own[k].shape))
    parts = [f"matches {matched} of the {len(needed)} {what} tensors (all are needed)"]
    if missing:
        parts.append(f"{len(missing)} missing from the file (first: {missing[:limit]})")
    if extra:
        parts.append(f"{len(extra)} file tensors {unused} (first: {extra[:limit]})")
    if shapes:
        parts.append(f"{len(shapes)} with another shape (first: " + ", ".join(
            f"{k}: file {a} vs {mine} {b}" for k, a, b in shapes[:limit]) + ")")
    return "; ".join(parts)
