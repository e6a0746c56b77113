"""What makes a training run resumable and safe: its key, ``last.pt``, the RNG states, the non-finite guard.

- The run key (:func:`run_key`) is everything a checkpoint depends on: the params the variant's train stage
  reads (``psdif.variants.params_read_by``) and the content of the inputs it reads (train / validation lists,
  pseudo-label and boundary manifests, initial weight files). A ``last.pt`` written under another key is
  refused, naming what changed, so a resumed run never continues on other data or other settings.
- ``last.pt`` holds the networks, optimiser, scheduler, the python / numpy / torch RNG states of every rank,
  the epoch and the batches done in it, and the loss-log accumulator: a killed run continues bit for bit.
  It is read with ``torch.load(weights_only=True)``: a crafted file cannot run code.
- :class:`NonFiniteGuard` records the first non-finite step on the device (no host sync per step on a GPU)
  and is checked at every log, checkpoint and at the end, so a NaN never reaches a file.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from psdif.config import Params, to_dict
from psdif.io import params_hash, save_torch
from psdif.seeding import seed_everything
from psdif.torchfile import load_torch
from psdif.variants import Variant, params_read_by, select_params

CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.pt"
CHECKPOINT_FORMAT = 2


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN / inf; the message names the step and the loss terms."""


class StaleCheckpointError(RuntimeError):
    """``last.pt`` was written under another run key; the message names the file and the differences."""


# ------------------------------------------------------------------------------------------ run key

def hashed_params(params: Params, variant: Variant, inputs: Optional[dict] = None,
                  seed: Optional[int] = None) -> dict:
    """The run key: the variant, its seed (default: the first of ``train.seeds``), the params its train
    stages list in dvc.yaml, and ``inputs`` (``{name: content digest}`` of the files the run reads; see
    ``stages/train.py``)."""
    keys = sorted(set(params_read_by(variant)) | {"data.intrinsics"})
    seed = params.train.seeds[0] if seed is None else seed
    key = {"variant": variant.name, "seed": seed, **select_params(to_dict(params), keys)}
    if inputs:
        key["inputs"] = dict(sorted(inputs.items()))
    return key


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def params_differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every key that differs between two :func:`hashed_params` dicts."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]


# ------------------------------------------------------------------------------------------ RNG states

def rng_state(device: torch.device) -> dict:
    """Python, numpy and torch RNG states as plain containers and tensors (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------------------ last.pt

@dataclass
class Progress:
    """Where a run stands: optimiser steps done, current epoch, batches done in it."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def load_checkpoint(path: Path, key: dict) -> dict:
    """Read ``last.pt`` safely; refuse it when it was written under another run key (names the differences)."""
    try:
        ckpt = load_torch(path)
    except ValueError as exc:  # truncated, crafted, or an older format with pickled objects (never run)
        raise StaleCheckpointError(f"{exc}; not a checkpoint of this version: delete it to start the run "
                                   "over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or \
            ckpt.get("params_hash") != params_hash(key):
        old = ckpt.get("params") if isinstance(ckpt, dict) else None
        diffs = params_differences(old, key) if isinstance(old, dict) else ["unknown format"]
        raise StaleCheckpointError(
            f"{path}: checkpoint was written under another run key ({'; '.join(diffs[:8])}"
            f"{'; ...' if len(diffs) > 8 else ''}); delete {path} to start over, or train into a fresh "
            "output directory")
    return ckpt


def save_checkpoint(path: Path, key: dict, progress: Progress, nets, optimizer, scheduler, rngs: list,
                    log_state: dict) -> None:
    """Write ``last.pt`` atomically (the previous one stays intact until the new one is complete)."""
    save_torch(path, {
        "format": CHECKPOINT_FORMAT, "params_hash": params_hash(key), "params": key,
        "step": progress.step, "epoch": progress.epoch, "batch": progress.batch, "world_size": len(rngs),
        "depth": nets.depth.state_dict(), "pose": nets.pose.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs, **log_state,
    })


def resume(path: Path, key: dict, nets, optimizer, scheduler, rank: int, world: int, seed: int,
           device: torch.device) -> tuple[Optional[Progress], dict]:
    """Restore a run from ``path`` if it exists: networks, optimiser, scheduler, RNG; returns (progress or
    None when starting fresh, the saved loss-log state). With another number of processes than the run was
    written with, the RNG streams cannot be the same: the run continues reproducibly from a derived seed."""
    if not path.exists():
        return None, {}
    ckpt = load_checkpoint(path, key)
    nets.depth.load_state_dict(ckpt["depth"])
    nets.pose.load_state_dict(ckpt["pose"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    progress = Progress(ckpt["step"], ckpt["epoch"], ckpt["batch"])
    if ckpt["world_size"] == world:
        set_rng_state(ckpt["rng"][rank], device)
    else:
        print(f"{path}: written by {ckpt['world_size']} processes, resumed by {world}: same data order, "
              "but the augmentation noise streams restart from a derived seed (not bit-identical)")
        seed_everything(seed + rank + 7919 * progress.step)
    return progress, {"log_sum": ckpt.get("log_sum"), "log_count": ckpt.get("log_count", 0)}


# ------------------------------------------------------------------------------------------ non-finite guard

class NonFiniteGuard:
    """Remembers, on the device, the first step whose loss terms were not all finite, and their values.

    :meth:`record` costs a few device ops and no host sync; :meth:`check` syncs (called at log and checkpoint
    steps and at the end) and raises :class:`NonFiniteLossError` naming the step and every term. On the CPU
    a sync is free, so :meth:`before_backward` checks the loss at once: the backward of a NaN warp is never
    run (CPU ``grid_sample`` backward on NaN coordinates can crash the process).
    """

    def __init__(self, device: torch.device, rank: int = 0):
        self.device, self.rank = device, rank
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_values: Optional[torch.Tensor] = None
        self.names: Optional[list[str]] = None

    def record(self, step: int, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stack the terms into one vector, remember it if it is the first non-finite one; returns the vector."""
        values = torch.stack([v.detach().float().reshape(()) if torch.is_tensor(v)
                              else torch.tensor(float(v), device=self.device) for v in terms.values()])
        if self.names is None:
            self.names, self.bad_values = list(terms), torch.zeros_like(values)
        newly_bad = (self.bad_step < 0) & ~values.isfinite().all()
        self.bad_step = torch.where(newly_bad, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_values = torch.where(newly_bad, values, self.bad_values)
        return values

    def before_backward(self, step: int, terms: dict[str, torch.Tensor], where: str) -> None:
        """CPU only: stop before the backward of a non-finite loss (no-op on a GPU: no per-step sync there)."""
        if self.device.type != "cpu" or bool(terms["total"].detach().isfinite()):
            return
        self.record(step, terms)
        self.check(None, where)

    def check(self, weights: Optional[list[torch.Tensor]], where: str, dist_reduce=None,
              step: Optional[int] = None) -> None:
        """Sync point: raise if a loss was non-finite since the start, or (``weights``) a weight is, on any rank.

        where: what is kept (e.g. "the last good checkpoint ... is kept"); dist_reduce: all-reduce (max) of a
        small int tensor across ranks, or None on one process.
        """
        weights_ok = all_finite(weights) if weights is not None else torch.ones((), dtype=torch.bool,
                                                                                  device=self.device)
        flags = torch.stack([(self.bad_step >= 0).long(), (~weights_ok).long()])
        if dist_reduce is not None:
            dist_reduce(flags)
        if not flags.any():
            return
        if self.bad_step >= 0:
            values = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.names, self.bad_values.tolist()))
            msg = f"non-finite loss at step {int(self.bad_step)} (rank {self.rank}): {values}"
        elif flags[0]:
            msg = "non-finite loss on another rank"
        else:
            msg = f"non-finite weights after step {step} (the loss was finite: a gradient overflowed)"
        raise NonFiniteLossError(f"{msg}; training stopped, {where}. Lower train.lr, or inspect that batch's "
                                 "inputs; a rerun resumes from the checkpoint")


def all_finite(tensors) -> torch.Tensor:
    """One bool tensor (no sync): every element of every tensor is finite (a norm is inf / nan otherwise)."""
    tensors = [t.detach() for t in tensors]
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: foreach kernels
        return torch.nn.utils.get_total_norm(tensors).isfinite()
    return torch.stack([t.float().norm() for t in tensors]).isfinite().all()
