"""The training loop: :func:`train`, read top to bottom, plus the one-step pieces it shares with the benchmarks.

set up (processes, seeds, networks, optimiser, data) -> resume (``psdif.checkpoint.resume``) -> epochs of
batches: forward + losses, backward, Adam step -> every ``train.log_every`` steps a log line and the
non-finite check, every ``train.checkpoint_every`` steps and at each epoch end ``last.pt`` -> ``model.pt``.

Throughput: the batch moves to the device in one ``batch.to``; the step has no host-device sync (the loss
terms accumulate on the device and are read only at log and checkpoint steps). Resume is exact: the
shuffled order depends on (seed, epoch), the augmentation on (seed, epoch, index), and
``last.pt`` holds every RNG state (``psdif.checkpoint``). Distributed: under ``torchrun`` the networks are
wrapped in DDP (NCCL on GPU, gloo on CPU), ``train.batch_size`` is the global batch, only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from psdif.data.batch import FRAME_IDS, Batch, PackedBatch
from psdif.checkpoint import (CHECKPOINT_NAME, MODEL_NAME, NonFiniteGuard, NonFiniteLossError,  # noqa: F401
                              Progress, StaleCheckpointError, hashed_params, resume, rng_state, save_checkpoint)
from psdif.config import Params, to_dict
from psdif.distributed import DistInfo, EpochSampler, check_shared_folder, init_distributed, loader_workers
from psdif.io import params_hash, progress_enabled, save_torch  # noqa: F401  (params_hash: the run-key hash)
from psdif.io import atomic_write_text
from psdif.seeding import seed_everything
from psdif.variants import Variant


RESULT_NAME = "result.json"  # beside model.pt once a run completes: TrainResult.record()
CODE_SCRIPT = "stages/train.py"  # the script whose code (and every psdif module it imports) is in the run key


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained networks (unwrapped) and a summary for the stage's metrics."""

    networks: "Networks"
    steps: int                                   # optimiser steps done in total (including resumed ones)
    final_losses: dict = field(default_factory=dict)  # mean of each loss term over the last log interval
    samples_per_second: float = float("nan")     # global samples / s of this process's run (incl. data)
    seconds: float = float("nan")                # wall time of this call of :func:`train`

    def record(self) -> dict:
        """What ``result.json`` holds (beside ``model.pt``): the summary without the networks."""
        return {"steps": self.steps, "final_losses": {k: float(v) for k, v in self.final_losses.items()},
                "samples_per_second": float(self.samples_per_second), "seconds": float(self.seconds)}


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
        """``{s: T_{t->s}}`` for the sources s = -1, +1 of a batch's frames (``psdif.models.pose.predict_poses``)."""
        from psdif.models.pose import FRAME_ORDER, predict_poses

        assert FRAME_IDS == FRAME_ORDER, FRAME_IDS
        return predict_poses(self.pose, images)


def build_networks(variant: Variant, model_cfg) -> tuple[nn.Module, nn.Module]:
    """The real networks: ``psdif.models.build_depth_net`` and ``build_pose_net``."""
    from psdif.models import build_depth_net, build_pose_net

    return build_depth_net(variant, model_cfg), build_pose_net(model_cfg)


def default_loss_fn(out, batch, poses, loss_cfg, variant, z, min_depth, max_depth):
    """The real losses: ``psdif.losses.compute_losses`` (design.md §2, Eq. 20)."""
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


def set_precision(device: torch.device) -> None:
    """fp32 training, the paper's precision (§4.2 names no mixed precision), on the tensor cores where it is safe.

    On CUDA, convolutions may use TF32 (``torch.backends.cudnn.allow_tf32 = True``, set here explicitly
    rather than left to PyTorch's default): inputs rounded to a 10-bit mantissa, products accumulated in
    fp32, as the cuDNN convolutions of PyTorch 2.7 (the paper's version) do by default on an RTX 3090.
    Matmuls stay full fp32 (``torch.backends.cuda.matmul.allow_tf32 = False``): the back-projection
    ``K^-1 p`` and the projection are matmuls on pixel coordinates up to 640, where TF32 rounding would move
    a sampled pixel by up to about 0.3 px. bf16 autocast is opt-in (``train.amp``, :func:`autocast_context`).
    Nothing to set on the CPU (fp32 throughout).
    """
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = False


def autocast_context(amp: bool, device: torch.device):
    """bf16 autocast on CUDA when ``amp`` (train.amp); a no-op context otherwise (CPU runs in fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if (amp and device.type == "cuda") \
        else contextlib.nullcontext()


def make_forward_loss(model: nn.Module, params: Params, variant: Variant,
                      loss_fn: Callable = default_loss_fn) -> Callable[[Batch], dict[str, torch.Tensor]]:
    """The forward half of a training step: ``batch -> {"total": loss, <term>: ...}`` (scalar tensors).

    model: :class:`Networks` (or its DDP wrapper) fed ``batch.images_aug`` ``[B, 3, 3, H, W]``; loss_fn:
    see :func:`default_loss_fn` (reads ``params.loss``, ``params.boundary.z``, ``params.model`` depth range).
    A :class:`PackedBatch` (what the loader delivers) is unpacked first, on its device: uint8 -> float and
    the colour jitter happen inside the step. This is the function ``train.compile`` hands to
    ``torch.compile`` (the backward is compiled with it).
    """
    z, mind, maxd = params.boundary.z, params.model.min_depth, params.model.max_depth

    def forward_loss(batch: Batch | PackedBatch) -> dict[str, torch.Tensor]:
        if isinstance(batch, PackedBatch):
            batch = batch.unpack()
        out, poses = model(batch.images_aug)
        return loss_terms(loss_fn(out, batch, poses, params.loss, variant, z, mind, maxd))

    return forward_loss


def train_step(forward_loss: Callable[[Batch], dict[str, torch.Tensor]], batch: Batch,
               optimizer: torch.optim.Optimizer, autocast=contextlib.nullcontext(),
               before_backward: Optional[Callable[[dict], None]] = None) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch already on the device: forward + losses (under ``autocast``), backward,
    Adam step. Returns the loss terms (device tensors; no host-device sync happens here).
    ``before_backward(terms)`` may stop the step before its backward (the CPU non-finite check)."""
    with autocast:
        terms = forward_loss(batch)
    if before_backward is not None:
        before_backward(terms)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return terms


# ------------------------------------------------------------------------------------------ logging

class LossLog:
    """Mean of each loss term over the steps since the last log line, accumulated on the device."""

    def __init__(self, state: Optional[dict] = None, device: Optional[torch.device] = None):
        state = state or {}
        self.sum = state["log_sum"].to(device) if state.get("log_sum") is not None else None
        self.count = state.get("log_count", 0)

    def add(self, values: torch.Tensor) -> None:
        self.sum = values if self.sum is None or self.count == 0 else self.sum + values
        self.count += 1

    def pop_means(self) -> list[float]:
        """The means since the last call (one host sync), then start over."""
        means = (self.sum / self.count).tolist()
        self.sum, self.count = torch.zeros_like(self.sum), 0
        return means

    def state(self) -> dict:
        return {"log_sum": None if self.sum is None else self.sum.cpu(), "log_count": self.count}


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
            tmp.replace(tsv)
    return Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, resume=resume_step is not None)


LIVE_SNAPSHOT = "dvclive"  # in the run folder: the DVCLive log as of the last checkpoint (or the finished run)


def snapshot_live(live_dir: Path, snapshot: Path) -> None:
    """Copy the DVCLive folder to ``snapshot`` (in the run folder, beside ``last.pt``), replacing the previous
    copy only once the new one is complete: ``<snapshot>.new`` is written, the old copy moved aside, the new
    one moved in, the old one deleted (:func:`restore_live` reads whichever is complete)."""
    new, old = snapshot.with_name(snapshot.name + ".new"), snapshot.with_name(snapshot.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(live_dir, new)
    shutil.rmtree(old, ignore_errors=True)
    if snapshot.exists():
        snapshot.rename(old)
    new.rename(snapshot)
    shutil.rmtree(old, ignore_errors=True)


def restore_live(snapshot: Path, live_dir: Path) -> bool:
    """Put the run folder's DVCLive snapshot back into ``live_dir`` (DVC deletes a stage's outputs before it
    runs, so a resumed run's earlier steps live only there); False if there is none."""
    for source in (snapshot, snapshot.with_name(snapshot.name + ".new")):  # .new: killed between the renames
        if source.is_dir():
            shutil.rmtree(live_dir, ignore_errors=True)
            shutil.copytree(source, live_dir)
            return True
    return False


def log_line(variant: str, step: int, total: int, losses: dict[str, float], samples_per_s: float,
             eta: float) -> str:
    """One plain progress line for logs without a terminal (nohup, CI, a cluster job): step, terms, speed, ETA."""
    terms = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
    return (f"train {variant}: step {step}/{total}  {terms}  {samples_per_s:.1f} samples/s  "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")


# ------------------------------------------------------------------------------------------ the loop

def make_dataset(params: Params, variant: Variant, frames, labels_root, boundary_root, seed: int, prepared=None):
    """The training set: ``prepared`` = ``{kind: manifest}`` of the prepare stage (frames resized once) or
    None (decode the PNGs under ``data.raw_root``, ``labels_root``, ``boundary_root`` every epoch)."""
    from psdif.data.dataset import TripletDataset, frames_from_split
    from psdif.data.prepared import load_prepared

    dc = params.data
    need_labels, need_boundary = variant.seg or variant.metric_loss, variant.metric_loss
    if frames is None:
        frames = frames_from_split(dc.splits_dir, dc.train_split, "train")
    if prepared is not None:
        kinds = ["images"] + ["labels"] * need_labels + ["boundaries"] * need_boundary
        prepared = load_prepared({k: prepared[k] for k in kinds})
    return TripletDataset(dc.raw_root, frames, dc.height, dc.width, labels_root, boundary_root, dc.img_ext,
                          train=True, seed=seed, intrinsics=dc.intrinsics,
                          need_labels=need_labels, need_boundary=need_boundary, prepared=prepared)


def train(params: Params, variant: Variant, out_dir: str | Path, *, labels_root=None, boundary_root=None,
          live_dir: Optional[str | Path] = None, frames=None, dataset=None, device=None,
          build_models: Callable = build_networks, loss_fn: Callable = default_loss_fn,
          progress: Optional[bool] = None, inputs: Optional[dict] = None,
          seed: Optional[int] = None, prepared=None,
          on_step: Optional[Callable[[int, "Networks"], None]] = None) -> TrainResult:
    """Train ``variant`` with ``params`` into ``out_dir`` (``last.pt`` while running, then ``model.pt``).

    labels_root / boundary_root: pseudo-label and boundary PNG roots (needed by seg / metric-loss variants);
    prepared: ``{kind: manifest path}`` of the prepare stage (read the frames from its arrays, see
    :func:`make_dataset`);
    live_dir: DVCLive folder, written as the run goes (default ``out_dir/dvclive``; another folder is copied to
    ``out_dir/dvclive`` with every checkpoint and at the end, and that copy is put back before a resume);
    frames: target frames (default: the train list of ``data.train_split``); dataset: a ready dataset with
    ``set_epoch`` (overrides frames);
    build_models(variant, model_cfg) -> (depth_net, pose_net); loss_fn: see :func:`default_loss_fn`;
    inputs: ``{name: digest}`` of the files the run reads, part of the run key (``psdif.checkpoint``);
    seed: of the initialisation, the shuffled order and the augmentation (default: the first of
    ``train.seeds``), part of the run key. on_step(step, networks): called on rank 0 after every optimiser
    step (bench/embedded_curve.py evaluates there; it must leave the networks and the RNG streams as it found them).
    Resumes from ``out_dir/last.pt`` when present (refused if written under another run key); a run that
    completes writes ``model.pt`` and then deletes ``last.pt``.
    """
    cuda = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    dinfo = init_distributed(cuda)
    try:
        return _train(params, variant, Path(out_dir), dinfo, cuda, labels_root=labels_root,
                      boundary_root=boundary_root, live_dir=live_dir, frames=frames, dataset=dataset,
                      device=device, build_models=build_models, loss_fn=loss_fn, progress=progress, inputs=inputs,
                      seed=params.train.seeds[0] if seed is None else seed, prepared=prepared, on_step=on_step)
    finally:
        if dinfo.initialised_here:
            dist.destroy_process_group()


def _train(params: Params, variant: Variant, out_dir: Path, dinfo: DistInfo, cuda: bool, *, labels_root,
           boundary_root, live_dir, frames, dataset, device, build_models, loss_fn, progress,
           inputs, seed: int, prepared, on_step) -> TrainResult:
    tc = params.train
    call_start = time.perf_counter()
    device = torch.device(device if device is not None else (f"cuda:{dinfo.local_rank}" if cuda else "cpu"))
    set_precision(device)  # fp32 (TF32 convolutions on CUDA); bf16 only with train.amp
    key = hashed_params(params, variant, inputs, seed)
    ckpt_path = out_dir / CHECKPOINT_NAME

    # networks (identical initialisation on every rank), then a per-rank stream for noise / dropout
    seed_everything(seed)
    nets = Networks(*build_models(variant, params.model)).to(device)
    seed_everything(seed + dinfo.rank)
    optimizer = make_optimizer(nets, tc.lr, device)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.lr_step_epochs, gamma=tc.lr_gamma)

    # data: the global batch is split over the ranks; static shapes (drop_last). The sampler hands out
    # (epoch, index) pairs, so persistent workers augment each epoch right without being told it.
    if dataset is None:
        dataset = make_dataset(params, variant, frames, labels_root, boundary_root, seed, prepared)
    if tc.batch_size % dinfo.world:
        raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {dinfo.world} processes")
    per_rank = tc.batch_size // dinfo.world
    sampler = EpochSampler(len(dataset), dinfo.rank, dinfo.world, seed, with_epoch=True)
    from psdif.data.dataset import collate
    workers = loader_workers(params.data.num_workers, device.type == "cuda")
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, collate_fn=collate, drop_last=True,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        prefetch_factor=4 if workers else None,
                        generator=torch.Generator())  # own generator: the global RNG stays untouched
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"{len(dataset)} training frames give no full batch of {tc.batch_size}; "
                         "lower train.batch_size or add frames")
    total_steps = min(tc.max_steps or math.inf, tc.epochs * steps_per_epoch)

    check_shared_folder(out_dir, dinfo)  # several machines: every rank must read the one last.pt
    resumed, log_state = resume(ckpt_path, key, nets, optimizer, scheduler, dinfo.rank, dinfo.world, seed,
                                device)
    at = resumed or Progress()
    if resumed is not None and dinfo.main:
        print(f"resuming {variant.name} seed {seed} from step {at.step} ({ckpt_path})", file=sys.stderr, flush=True)
    losses = LossLog(log_state, device)

    # static_graph: the same parameters take part in every step (it also avoids a false "no gradient"
    # alarm on MSFAN's coordinate-attention convs and find_unused_parameters' per-step traversal)
    model = nn.parallel.DistributedDataParallel(nets, device_ids=[device.index] if device.type == "cuda" else None,
                                                static_graph=True) if dinfo.world > 1 else nets
    autocast = autocast_context(tc.amp, device)
    forward_loss = make_forward_loss(model, params, variant, loss_fn)
    step_fn = torch.compile(forward_loss) if tc.compile else forward_loss

    # DVCLive writes straight into live_dir (the stage's output: curves update while the run goes on); when
    # that is not the run folder's own, a copy of it is kept there with every checkpoint and put back on resume
    live_dir = Path(live_dir) if live_dir else out_dir / LIVE_SNAPSHOT
    snapshot = out_dir / LIVE_SNAPSHOT
    snapshot = None if snapshot.resolve() == live_dir.resolve() else snapshot
    if dinfo.main and resumed is not None and snapshot is not None:
        restore_live(snapshot, live_dir)
    live = open_live(live_dir, at.step if resumed else None) if dinfo.main else None
    show = progress_enabled() if progress is None else progress
    from psdif.process import progress_bar, set_resume_note
    pbar = progress_bar(total=total_steps, initial=at.step, desc=f"train {variant.name}",
                        disable=not (show and dinfo.main))
    saved = [at.step if resumed is not None else None]  # the step of the checkpoint on disk, for Ctrl-C's line
    set_resume_note(lambda: (f"the checkpoint {ckpt_path} at step {saved[0]} of {total_steps} is kept; rerun "
                             "`dvc repro` to resume from it") if saved[0] is not None else
                    f"no checkpoint was written yet (the first at step {min(tc.checkpoint_every, total_steps)}); "
                    "rerun `dvc repro` to start again")
    guard = NonFiniteGuard(device, dinfo.rank)
    reduce_max = (lambda t: dist.all_reduce(t, op=dist.ReduceOp.MAX)) if dinfo.world > 1 else None
    final_losses: dict[str, float] = {}

    def kept() -> str:
        return f"the last good checkpoint {ckpt_path} is kept" if ckpt_path.exists() else "no checkpoint was written"

    def checkpoint() -> None:
        guard.check(list(nets.parameters()), kept(), reduce_max, at.step)
        rngs = [None] * dinfo.world
        if dinfo.world > 1:
            dist.all_gather_object(rngs, rng_state(device))
        else:
            rngs[0] = rng_state(device)
        if dinfo.main:
            if snapshot is not None:  # before last.pt: a snapshot ahead of it is cut back to its step on resume
                snapshot_live(live_dir, snapshot)
            save_checkpoint(ckpt_path, key, at, nets, optimizer, scheduler, rngs, losses.state())
            saved[0] = at.step

    start_step, start_time = at.step, time.perf_counter()

    def log() -> None:
        guard.check(None, kept(), reduce_max)
        final_losses.update(zip(guard.names, losses.pop_means()))
        if live is None:
            return
        live.step = at.step
        for name, value in final_losses.items():
            live.log_metric(f"train/{name}", value)
        live.log_metric("train/lr", scheduler.get_last_lr()[0])
        live.sync()
        pbar.set_postfix(loss=f"{final_losses['total']:.4f}")
        if not show:  # no terminal: one plain line per log interval
            seconds, done = time.perf_counter() - start_time, max(at.step - start_step, 1)
            print(log_line(variant.name, at.step, total_steps, final_losses, done * tc.batch_size / seconds,
                           (total_steps - at.step) * seconds / done), file=sys.stderr, flush=True)

    while at.step < total_steps and at.epoch < tc.epochs:
        dataset.set_epoch(at.epoch)
        sampler.set_epoch(at.epoch, skip=at.batch * per_rank)
        for batch in loader:
            terms = train_step(step_fn, batch.to(device), optimizer, autocast,
                               before_backward=lambda t: guard.before_backward(at.step + 1, t, kept()))
            at.step, at.batch = at.step + 1, at.batch + 1
            pbar.update(1)
            losses.add(guard.record(at.step, terms))  # device-side bookkeeping only
            if on_step is not None and dinfo.main:
                on_step(at.step, nets)
            if at.step % tc.log_every == 0:
                log()
            if at.batch == steps_per_epoch or at.step >= total_steps:
                break
            if at.step % tc.checkpoint_every == 0:
                checkpoint()
        if at.batch == steps_per_epoch:  # epoch end: lr schedule (StepLR counts epochs)
            scheduler.step()
            at.epoch, at.batch = at.epoch + 1, 0
        checkpoint()
    pbar.close()
    seconds = time.perf_counter() - start_time
    if losses.count:  # the steps after the last multiple of log_every
        log()

    guard.check(list(nets.parameters()), kept(), reduce_max, at.step)
    result = TrainResult(nets, at.step, final_losses, (at.step - start_step) * tc.batch_size / max(seconds, 1e-9),
                         time.perf_counter() - call_start)
    if live is not None:
        live.end()
        if snapshot is not None:  # the finished run's log, for a later reuse of the run (:func:`train_run`)
            snapshot_live(live_dir, snapshot)
    if dinfo.main:
        save_torch(out_dir / MODEL_NAME, {"depth": nets.depth.state_dict(), "pose": nets.pose.state_dict(),
                                          "variant": dataclasses.asdict(variant), "model_cfg": to_dict(params.model),
                                          "height": params.data.height, "width": params.data.width,
                                          "step": at.step})
        # model.pt, then result.json, then no last.pt: a run killed in between resumes at its last step and
        # writes both again; model.pt + result.json is a finished run (:func:`finished_run`)
        atomic_write_text(out_dir / RESULT_NAME, json.dumps(result.record(), indent=1) + "\n")
        ckpt_path.unlink(missing_ok=True)  # complete: nothing to resume
    set_resume_note(None)
    return result


# ------------------------------------------------------------------------------------------ the stage's run

def code_inputs(script: str = CODE_SCRIPT, root: Optional[Path] = None) -> dict[str, str]:
    """``{path: MD5}`` of ``script`` and every psdif module it imports, transitively: the code part of the train
    stage's run key, from ``psdif.codedeps.code_deps`` (the list dvc.yaml's code deps come from). Another
    content of any of them is another run key, so a run never resumes a ``last.pt`` written by other code."""
    from psdif.codedeps import REPO, code_deps
    from psdif.io import md5_file

    root = REPO if root is None else Path(root)
    return {path: md5_file(root / path) for path in code_deps(script, root)}


def finished_run(run_dir: str | Path) -> Optional[dict]:
    """The :meth:`TrainResult.record` of a run that completed in ``run_dir`` (``model.pt`` and ``result.json``,
    written in that order), else None."""
    run_dir = Path(run_dir)
    if not ((run_dir / MODEL_NAME).is_file() and (run_dir / RESULT_NAME).is_file()):
        return None
    try:
        record = json.loads((run_dir / RESULT_NAME).read_text())
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("steps"), int) else None


def _is_code(name: str) -> bool:
    return name.endswith(".py")


def runs_with_other_code(run_dir: str | Path, key: dict) -> list[tuple[Path, list[str]]]:
    """(folder, code files that differ) of every unfinished run beside ``run_dir`` (a ``last.pt`` in
    ``<runs>/<variant>-*``) whose run key equals ``key`` but for the code: same variant, seed, params, data."""
    run_dir = Path(run_dir)

    def without_code(k: dict) -> dict:
        return {**k, "inputs": {n: d for n, d in (k.get("inputs") or {}).items() if not _is_code(n)}}

    found = []
    for other in sorted(run_dir.parent.glob(f"{key['variant']}-*")):
        ckpt = other / CHECKPOINT_NAME
        if other.resolve() == run_dir.resolve() or not ckpt.is_file():
            continue
        try:
            old = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("params")
        except Exception:  # unreadable: not ours to judge here (resume names it when pointed at)
            continue
        if not isinstance(old, dict) or without_code(old) != without_code(key):
            continue
        a, b = old.get("inputs") or {}, key.get("inputs") or {}
        found.append((other, sorted(n for n in a.keys() | b.keys() if _is_code(n) and a.get(n) != b.get(n))))
    return found


def train_run(params: Params, variant: Variant, run_dir: str | Path, *, seed: int, inputs: dict,
              train_fn: Optional[Callable] = None, **train_kwargs) -> dict:
    """The train stage's run in ``run_dir`` (``data/runs/<variant>-<run key>``): reuse it when it finished
    (``model.pt`` + ``result.json``: no training), resume its ``last.pt`` (said in one line by :func:`train`),
    or start at step 0 (saying which unfinished runs of other code are not resumed). Returns the result
    record (:meth:`TrainResult.record`); ``train_kwargs`` go to :func:`train`."""
    run_dir = Path(run_dir)
    done = finished_run(run_dir)
    if done is not None:
        print(f"{variant.name} seed {seed}: reusing the finished run {run_dir} (same run key, {MODEL_NAME} "
              "complete): no training", flush=True)
        return done
    main = int(os.environ.get("RANK", "0")) == 0
    if main and not (run_dir / CHECKPOINT_NAME).exists():
        for other, changed in runs_with_other_code(run_dir, hashed_params(params, variant, inputs, seed)):
            print(f"note: not resuming the unfinished run {other}: it was written by other code "
                  f"({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''} changed); "
                  f"{variant.name} seed {seed} starts at step 0 in {run_dir}", file=sys.stderr, flush=True)
    result = (train_fn or train)(params, variant, run_dir, inputs=inputs, seed=seed, **train_kwargs)
    return result.record()
