"""The training loop: one readable function, :func:`train`, plus the small pieces it uses.

Read top to bottom: set up (distributed, seeds, networks, optimiser, data) -> resume from ``last.pt`` ->
loop over epochs and batches (forward, loss, backward, step) -> log / check / checkpoint -> ``model.pt``.

Throughput (SPEC §5): the batch moves to the device in one ``batch.to``; the step has no host-device
sync: the loss terms are accumulated on the device and read only every ``train.log_every`` steps and at
checkpoints. Non-finite losses are therefore detected at those points, not at the step they happen:
a device flag records the first non-finite step and its loss terms, and it is checked (together with the
finiteness of the weights) before every checkpoint and before ``model.pt``, so a NaN never reaches a
file and the last good checkpoint stays as it was. The run then stops with an error that names the
step and each term's value.

Exact resume: ``last.pt`` (written atomically every ``train.checkpoint_every`` steps and at every epoch
end) holds the networks, optimiser, scheduler, the python / numpy / torch RNG states of every rank, the
epoch and the number of batches done in it. The shuffled order depends on (train.seed, epoch) only and
the augmentation on (train.seed, epoch, index), so a restarted run skips the batches already done and
continues bit for bit. A checkpoint written with different parameters is refused. A completed run
writes ``model.pt`` and removes ``last.pt``.

Distributed: under ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK set) the networks are wrapped in DDP
(NCCL on GPU, gloo on CPU); ``train.batch_size`` is the GLOBAL batch, split evenly over the ranks, so a
run gives the same gradients on any number of processes (up to BatchNorm statistics, which are per rank).
Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from psdif.batch import FRAME_IDS, Batch
from psdif.config import Params, to_dict
from psdif.io import params_hash, progress_enabled, save_torch
from psdif.variants import Variant, params_read_by, select_params

CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained networks (unwrapped) and a summary for the stage's metrics."""

    networks: "Networks"
    steps: int                                   # optimiser steps done in total (including resumed ones)
    final_losses: dict = field(default_factory=dict)  # mean of each loss term over the last log interval
    samples_per_second: float = float("nan")     # global samples / s of this process's run (incl. data)


class NonFiniteLossError(RuntimeError):
    """The loss (or the weights) became NaN / inf; the message names the step and the loss terms."""


class StaleCheckpointError(RuntimeError):
    """``last.pt`` was written with other parameters; the message names the file and the differences."""


# ------------------------------------------------------------------------------------------ networks

class Networks(nn.Module):
    """Depth and pose networks as one module: one DDP wrapper, one compile target, one forward per step."""

    def __init__(self, depth: nn.Module, pose: nn.Module):
        super().__init__()
        self.depth = depth
        self.pose = pose

    def forward(self, images_aug: torch.Tensor):
        """images_aug: [B, 3, 3, H, W] (frames in FRAME_IDS order) -> (depth output, poses {-1: T, 1: T})."""
        return self.depth(images_aug[:, 0]), self.predict_poses(images_aug)

    def predict_poses(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """Monodepth2 convention: ``{s: T_{t->s} [B, 4, 4]}`` for the sources s = -1, +1 (target-to-source).

        Pairs go in temporal order ((t-1, t) and (t, t+1)); the pose of the earlier source is inverted.
        Both pairs run as ONE pose-network call on a 2B batch (one launch sequence, graph-capture friendly).
        """
        from psdif.geometry import transformation_from_parameters

        b = images.shape[0]
        assert FRAME_IDS == (0, -1, 1), FRAME_IDS
        target, prev, nxt = images[:, 0], images[:, 1], images[:, 2]
        pairs = torch.cat([torch.cat([prev, target], 1), torch.cat([target, nxt], 1)], 0)  # [2B, 6, H, W]
        axisangle, translation = self.pose(pairs)                                          # [2B, 1, 3] each
        t_prev = transformation_from_parameters(axisangle[:b], translation[:b], invert=True)
        t_next = transformation_from_parameters(axisangle[b:], translation[b:], invert=False)
        return {-1: t_prev, 1: t_next}


def build_networks(variant: Variant, model_cfg) -> tuple[nn.Module, nn.Module]:
    """The real networks: ``psdif.models.build_depth_net`` and ``build_pose_net``."""
    from psdif.models import build_depth_net, build_pose_net

    return build_depth_net(variant, model_cfg), build_pose_net(model_cfg)


def default_loss_fn(out, batch, poses, loss_cfg, variant, z, min_depth, max_depth):
    """The real losses: ``psdif.losses.compute_losses`` (SPEC §2, Eq. 20)."""
    from psdif.losses import compute_losses

    return compute_losses(out, batch, poses, loss_cfg, variant, z, min_depth, max_depth)


def loss_terms(terms) -> dict[str, torch.Tensor]:
    """The named scalar terms of a loss result (dataclass, NamedTuple or dict); ``total`` first."""
    if dataclasses.is_dataclass(terms):
        items = {f.name: getattr(terms, f.name) for f in dataclasses.fields(terms)}
    elif hasattr(terms, "_asdict"):
        items = terms._asdict()
    else:
        items = dict(terms)
    items = {k: v for k, v in items.items()
             if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float))}
    if "total" not in items:
        raise TypeError(f"the loss function must return a 'total' term, got {list(items)}")
    return {"total": items.pop("total"), **items}


# ------------------------------------------------------------------------------------------ the step

def make_optimizer(nets: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam over every parameter of ``nets`` (train.lr); the fused kernel on CUDA."""
    return torch.optim.Adam(nets.parameters(), lr=lr, fused=device.type == "cuda")


def autocast_context(amp: bool, device: torch.device):
    """bf16 autocast on CUDA when ``amp`` (train.amp); a no-op context otherwise (CPU runs in fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") \
        else contextlib.nullcontext()


def make_forward_loss(model: nn.Module, params: Params, variant: Variant,
                      loss_fn: Callable = default_loss_fn) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """The forward half of a training step: ``batch -> {"total": loss, <term>: ...}`` (scalar tensors).

    model: :class:`Networks` (or its DDP wrapper) fed ``batch.images_aug`` ``[B, 3, 3, H, W]``; loss_fn:
    see :func:`default_loss_fn` (reads ``params.loss``, ``params.boundary.z``, ``params.model`` depth range).
    This is the function ``train.compile`` hands to ``torch.compile`` (the backward is compiled with it).
    """
    z, mind, maxd = params.boundary.z, params.model.min_depth, params.model.max_depth

    def forward_loss(batch: Batch) -> dict[str, torch.Tensor]:
        out, poses = model(batch.images_aug)
        return loss_terms(loss_fn(out, batch, poses, params.loss, variant, z, mind, maxd))

    return forward_loss


def train_step(forward_loss: Callable[[Batch], dict[str, torch.Tensor]], batch: Batch,
               optimizer: torch.optim.Optimizer, autocast=contextlib.nullcontext()) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch already on the device: forward + losses (under ``autocast``), backward,
    Adam step. Returns the loss terms (device tensors; no host-device sync happens here)."""
    with autocast:
        terms = forward_loss(batch)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return terms


# ------------------------------------------------------------------------------------------ distributed

@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    initialised_here: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(cuda: bool) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world == 1:
        return DistInfo(0, 1, 0, False)
    here = not dist.is_initialized()
    if cuda:
        torch.cuda.set_device(local_rank)
    if here:
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, world, local_rank, here)


class EpochSampler(Sampler[int]):
    """This rank's share of a (seed, epoch)-shuffled order, optionally skipping the batches already done.

    Order: ``randperm(n)`` from a generator seeded with ``seed + epoch``, cut to a multiple of ``world``;
    rank r takes positions r, r + world, ... (as DistributedSampler with drop_last). ``set_epoch(e, skip)``
    starts the epoch ``skip`` samples in (resume mid-epoch).
    """

    def __init__(self, n: int, rank: int, world: int, seed: int, shuffle: bool = True):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        order = order[: self.n // self.world * self.world]
        return order[self.rank:: self.world]

    def __iter__(self):
        return iter(self.indices()[self.skip:])

    def __len__(self) -> int:
        return self.n // self.world - self.skip


# ------------------------------------------------------------------------------------------ checkpoints

def hashed_params(params: Params, variant: Variant) -> dict:
    """The parameters a checkpoint depends on: the keys the variant's train stage lists in dvc.yaml
    (:func:`psdif.variants.params_read_by`), ``data.intrinsics``, and the variant name."""
    keys = sorted(set(params_read_by(variant)) | {"data.intrinsics"})
    return {"variant": variant.name, **select_params(to_dict(params), keys)}


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


def rng_state(device: torch.device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def all_finite(tensors) -> torch.Tensor:
    """One bool tensor (no sync): every element of every tensor is finite (a norm is inf / nan otherwise)."""
    tensors = [t.detach() for t in tensors]
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: foreach kernels
        return torch.nn.utils.get_total_norm(tensors).isfinite()
    return torch.stack([t.float().norm() for t in tensors]).isfinite().all()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint(path: Path, hashed: dict) -> dict:
    """Read ``last.pt``; refuse it when it was written with other parameters (names the differences)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("params_hash") != params_hash(hashed):
        diffs = params_differences(ckpt.get("params", {}), hashed) if "params" in ckpt else ["unknown format"]
        raise StaleCheckpointError(
            f"{path}: checkpoint was written with different parameters ({'; '.join(diffs[:8])}"
            f"{'; ...' if len(diffs) > 8 else ''}); delete {path} to start over, or train into a fresh "
            "output directory")
    return ckpt


# ------------------------------------------------------------------------------------------ logging

def open_live(live_dir: Path, resume_step: Optional[int]):
    """DVCLive logger (no dvc.yaml, no DVC experiment); on resume, drop rows logged after the checkpoint."""
    from dvclive import Live

    if resume_step is not None:
        for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
            lines = tsv.read_text().splitlines(keepends=True)
            head, rows = lines[:1], lines[1:]
            step_col = head[0].rstrip("\n").split("\t").index("step") if head else 0
            rows = [r for r in rows if int(r.split("\t")[step_col]) <= resume_step]
            tmp = tsv.with_suffix(".tsv.tmp")
            tmp.write_text("".join(head + rows))
            os.replace(tmp, tsv)
    return Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resume_step is not None)


# ------------------------------------------------------------------------------------------ the loop

def make_dataset(params: Params, variant: Variant, frames, labels_root, boundary_root):
    from psdif.data.dataset import TripletDataset, frames_from_split

    dc = params.data
    if frames is None:
        frames = frames_from_split(dc.splits_dir, dc.train_split, "train")
    return TripletDataset(dc.raw_root, frames, dc.height, dc.width, labels_root, boundary_root, dc.img_ext,
                          train=True, seed=params.train.seed, intrinsics=dc.intrinsics,
                          need_labels=variant.seg or variant.metric_loss, need_boundary=variant.metric_loss)


def train(params: Params, variant: Variant, out_dir: str | Path, *, labels_root=None, boundary_root=None,
          live_dir: Optional[str | Path] = None, frames=None, dataset=None, device=None,
          build_models: Callable = build_networks, loss_fn: Callable = default_loss_fn,
          progress: Optional[bool] = None) -> TrainResult:
    """Train ``variant`` with ``params`` into ``out_dir`` (``last.pt`` while running, then ``model.pt``).

    labels_root / boundary_root: pseudo-label and boundary PNG roots (needed by seg / metric-loss variants);
    live_dir: DVCLive folder (default ``out_dir/dvclive``); frames: target frames (default: the train list
    of ``data.train_split``); dataset: a ready dataset with ``set_epoch`` (overrides frames);
    build_models(variant, model_cfg) -> (depth_net, pose_net); loss_fn: see :func:`default_loss_fn`.
    Resumes from ``out_dir/last.pt`` when present (refused if written with other parameters); a run that
    completes writes ``model.pt`` and then deletes ``last.pt``, so a later run with other parameters
    (``dvc exp run -S ...``) starts fresh instead of being refused.
    """
    cuda = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    dinfo = init_distributed(cuda)
    try:
        return _train(params, variant, Path(out_dir), dinfo, cuda, labels_root=labels_root,
                      boundary_root=boundary_root, live_dir=live_dir, frames=frames, dataset=dataset,
                      device=device, build_models=build_models, loss_fn=loss_fn, progress=progress)
    finally:
        if dinfo.initialised_here:
            dist.destroy_process_group()


def _train(params: Params, variant: Variant, out_dir: Path, dinfo: DistInfo, cuda: bool, *, labels_root,
           boundary_root, live_dir, frames, dataset, device, build_models, loss_fn, progress) -> TrainResult:
    tc = params.train
    device = torch.device(device if device is not None else (f"cuda:{dinfo.local_rank}" if cuda else "cpu"))
    hashed = hashed_params(params, variant)
    ckpt_path = out_dir / CHECKPOINT_NAME

    # networks (identical initialisation on every rank), then a per-rank stream for noise / dropout
    seed_everything(tc.seed)
    nets = Networks(*build_models(variant, params.model)).to(device)
    seed_everything(tc.seed + dinfo.rank)
    optimizer = make_optimizer(nets, tc.lr, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)

    # data: the global batch is split over the ranks; static shapes (drop_last)
    if dataset is None:
        dataset = make_dataset(params, variant, frames, labels_root, boundary_root)
    if tc.batch_size % dinfo.world:
        raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {dinfo.world} processes")
    per_rank = tc.batch_size // dinfo.world
    sampler = EpochSampler(len(dataset), dinfo.rank, dinfo.world, tc.seed)
    from psdif.data.dataset import collate
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate, drop_last=True,
                        num_workers=params.data.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # own generator: the global RNG stays untouched
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training frames give no full batch of {tc.batch_size}; "
                         "lower train.batch_size or add frames")
    total_steps = min(tc.max_steps or math.inf, tc.epochs * steps_per_epoch)

    # resume
    step, epoch, batch_in_epoch, resumed = 0, 0, 0, False
    log_sum, log_count = None, 0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, hashed)
        nets.depth.load_state_dict(ckpt["depth"])
        nets.pose.load_state_dict(ckpt["pose"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_in_epoch, resumed = ckpt["step"], ckpt["epoch"], ckpt["batch"], True
        if ckpt["world_size"] == dinfo.world:
            set_rng_state(ckpt["rng"][dinfo.rank], device)
        else:  # exact resume needs the same number of processes; continue reproducibly anyway
            seed_everything(tc.seed + dinfo.rank + 7919 * step)
        if ckpt.get("log_sum") is not None:
            log_sum, log_count = ckpt["log_sum"].to(device), ckpt["log_count"]
        del ckpt

    # static_graph: the same parameters take part in every step. (With the default, the real MSFAN's
    # coordinate-attention conv_w layers made DDP stop at step 2 claiming they got no gradient, although
    # they do; static_graph records the graph once and avoids find_unused_parameters' per-step traversal.)
    model = nn.parallel.DistributedDataParallel(nets, device_ids=[device.index] if device.type == "cuda" else None,
                                                static_graph=True) if dinfo.world > 1 else nets
    autocast = autocast_context(tc.amp, device)
    forward_loss = make_forward_loss(model, params, variant, loss_fn)
    step_fn = torch.compile(forward_loss) if tc.compile else forward_loss

    live = open_live(Path(live_dir) if live_dir else out_dir / "dvclive", step if resumed else None) \
        if dinfo.main else None
    show = progress_enabled() if progress is None else progress
    from tqdm import tqdm
    pbar = tqdm(total=total_steps, initial=step, desc=f"train {variant.name}", disable=not (show and dinfo.main))

    names: Optional[list[str]] = None
    final_losses: dict[str, float] = {}
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step, -1 = none
    bad_terms: Optional[torch.Tensor] = None

    def check_finite(weights: bool = False) -> None:
        """Sync point: stop if a loss was non-finite since the start, or (``weights``) a weight is, on any rank."""
        weights_ok = all_finite(nets.parameters()) if weights else torch.ones((), dtype=torch.bool, device=device)
        flags = torch.stack([(bad_step >= 0).long(), (~weights_ok).long()])
        if dinfo.world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if not flags.any():
            return
        last = f"the last good checkpoint {ckpt_path} is kept" if ckpt_path.exists() else "no checkpoint was written"
        if bad_step >= 0:
            values = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, bad_terms.tolist()))
            msg = f"non-finite loss at step {int(bad_step)} (rank {dinfo.rank}): {values}"
        elif flags[0]:
            msg = "non-finite loss on another rank"
        else:
            msg = f"non-finite weights after step {step} (the loss was finite: a gradient overflowed)"
        raise NonFiniteLossError(f"{msg}; training stopped, {last}. Lower train.lr, or inspect that "
                                 "batch's inputs; a rerun resumes from the checkpoint")

    def save_checkpoint() -> None:
        check_finite(weights=True)
        rngs = [None] * dinfo.world
        if dinfo.world > 1:
            dist.all_gather_object(rngs, rng_state(device))
        else:
            rngs[0] = rng_state(device)
        if dinfo.main:
            save_torch(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "params_hash": params_hash(hashed), "params": hashed,
                "step": step, "epoch": epoch, "batch": batch_in_epoch, "world_size": dinfo.world,
                "depth": nets.depth.state_dict(), "pose": nets.pose.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rngs,
                "log_sum": None if log_sum is None else log_sum.cpu(), "log_count": log_count,
            })

    def log() -> None:
        nonlocal log_sum, log_count
        check_finite()
        final_losses.update(zip(names, (log_sum / log_count).tolist()))
        if live is not None:
            live.step = step
            for name, value in final_losses.items():
                live.log_metric(f"train/{name}", value)
            live.log_metric("train/lr", scheduler.get_last_lr()[0])
            live.sync()
            pbar.set_postfix(loss=f"{final_losses['total']:.4f}")
        log_sum, log_count = torch.zeros_like(log_sum), 0

    start_step, start_time = step, time.perf_counter()
    while step < total_steps and epoch < tc.epochs:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch, skip=batch_in_epoch * per_rank)
        for batch in loader:
            terms = train_step(step_fn, batch.to(device), optimizer, autocast)
            step, batch_in_epoch = step + 1, batch_in_epoch + 1
            pbar.update(1)

            # bookkeeping on the device only (no sync): log sums, first non-finite step and its terms
            values = torch.stack([v.detach().float().reshape(()) if torch.is_tensor(v)
                                  else torch.tensor(float(v), device=device) for v in terms.values()])
            if names is None:
                names, bad_terms = list(terms), torch.zeros_like(values)
            newly_bad = (bad_step < 0) & ~values.isfinite().all()
            bad_step = torch.where(newly_bad, torch.full_like(bad_step, step), bad_step)
            bad_terms = torch.where(newly_bad, values, bad_terms)
            log_sum = values if log_sum is None or log_count == 0 else log_sum + values
            log_count += 1

            if step % tc.log_every == 0:
                log()
            if batch_in_epoch == steps_per_epoch or step >= total_steps:
                break
            if step % tc.checkpoint_every == 0:
                save_checkpoint()
        if batch_in_epoch == steps_per_epoch:  # epoch end: lr schedule (StepLR counts epochs)
            scheduler.step()
            epoch, batch_in_epoch = epoch + 1, 0
        save_checkpoint()
    pbar.close()
    seconds = time.perf_counter() - start_time
    if log_count:  # the steps after the last multiple of log_every
        log()

    check_finite(weights=True)
    if dinfo.main:
        save_torch(out_dir / MODEL_NAME, {"depth": nets.depth.state_dict(), "pose": nets.pose.state_dict(),
                           "variant": dataclasses.asdict(variant), "model_cfg": to_dict(params.model),
                           "height": params.data.height, "width": params.data.width, "step": step})
        ckpt_path.unlink(missing_ok=True)  # complete: nothing to resume
    if live is not None:
        live.end()
    return TrainResult(nets, step, final_losses, (step - start_step) * tc.batch_size / max(seconds, 1e-9))
