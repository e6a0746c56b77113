"""Processes and samples: launching under ``torchrun`` on one or several machines, joining the process
group, and each rank's exact share of an epoch.

``train.batch_size`` is the GLOBAL batch: it is split evenly over the ranks, and every rank draws its
samples from one (seed, epoch)-shuffled order, so a run sees the same samples in the same steps on any
number of processes (see ``docs/design.md``, "Training").

Launching (the train and pseudolabel stages call :func:`relaunch_under_torchrun` first):

- one machine, G GPUs: ``PSDIF_NPROC=G dvc repro``: the stage re-executes itself under
  ``torchrun --standalone --nproc-per-node G``;
- N machines: ``PSDIF_NNODES=N PSDIF_NPROC=G PSDIF_RDZV_ENDPOINT=<host of node 0>:<free port>`` on every
  machine, ``PSDIF_NODE_RANK=0`` on the one that runs ``dvc repro`` and 1 .. N-1 on the others, which run
  the stage's own command (``python stages/train.py --variant full --seed 0``) in the same checkout: a static
  rendezvous at that address, global rank 0 on node 0 (it writes every output; the others write nothing).
  ``data/`` (inputs, run folders, checkpoints) must be one shared filesystem; the train stage checks it.
- plain ``torchrun ... stages/train.py --variant full --seed 0`` works as well (RANK is set: no relaunch).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    initialised_here: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_command(script: str, argv: list[str], env=None) -> list[str] | None:
    """The torchrun command line that runs ``script argv`` in PSDIF_NPROC processes on each of PSDIF_NNODES
    machines, or None when one process is asked for or this process was started by torchrun (RANK set).
    env: the environment to read (default ``os.environ``)."""
    env = os.environ if env is None else env
    nproc, nnodes = int(env.get("PSDIF_NPROC", "1")), int(env.get("PSDIF_NNODES", "1"))
    if (nproc <= 1 and nnodes <= 1) or "RANK" in env:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes <= 1:
        return cmd + ["--standalone", script, *argv]
    endpoint, node = env.get("PSDIF_RDZV_ENDPOINT", ""), env.get("PSDIF_NODE_RANK")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or node is None or not node.isdigit() or int(node) >= nnodes:
        raise SystemExit(f"error: PSDIF_NNODES={nnodes} needs PSDIF_RDZV_ENDPOINT=<host of node 0>:<port> "
                         f"(got {endpoint!r}) and PSDIF_NODE_RANK=0..{nnodes - 1} (got {node!r}) on every machine")
    return cmd + [f"--nnodes={nnodes}", f"--node-rank={node}", f"--master-addr={host}", f"--master-port={port}",
                  script, *argv]


def relaunch_under_torchrun(script: str, argv: list[str]) -> None:
    """Replace this process by torchrun when :func:`torchrun_command` asks for one (else return)."""
    cmd = torchrun_command(script, argv)
    if cmd is not None:
        print("launching: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        os.execvp(cmd[0], cmd)


def init_distributed(cuda: bool, timeout_minutes: float | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPU, gloo on CPU.

    timeout_minutes: how long a collective (a barrier) waits for the slowest rank (torch's default if None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world == 1:
        return DistInfo(0, 1, 0, False)
    here = not dist.is_initialized()
    if cuda:
        torch.cuda.set_device(local_rank)
    if here:
        kw = {"timeout": datetime.timedelta(minutes=timeout_minutes)} if timeout_minutes else {}
        dist.init_process_group("nccl" if cuda else "gloo", **kw)
    return DistInfo(rank, world, local_rank, here)


def check_shared_folder(folder, dinfo: DistInfo) -> None:
    """Several processes: rank 0 writes a file in ``folder`` and every rank must see it (the run folder and
    data/ must be one filesystem on every machine); a rank that does not raises naming its host."""
    if dinfo.world == 1:
        return
    import socket
    from pathlib import Path

    from psdif.io import atomic_write_text

    marker = Path(folder) / ".shared-check"
    if dinfo.main:
        atomic_write_text(marker, socket.gethostname())
    dist.barrier()
    seen = marker.exists()
    flags = torch.tensor([0 if seen else 1], device=torch.device("cuda", torch.cuda.current_device())
                         if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flags)
    if dinfo.main:
        marker.unlink(missing_ok=True)
    if not seen:
        raise RuntimeError(f"rank {dinfo.rank} on {socket.gethostname()} does not see {marker}, written by rank 0: "
                           "the run folder (data/) must be on a filesystem shared by every machine")
    if int(flags.item()):
        raise RuntimeError(f"{int(flags.item())} rank(s) do not see {folder}: data/ must be on a shared filesystem")


class EpochSampler(Sampler):
    """This rank's share of a (seed, epoch)-shuffled order, optionally skipping the batches already done.

    Order: ``randperm(n)`` from a generator seeded with ``seed + epoch``, cut to a multiple of ``world``;
    rank r takes positions r, r + world, ... (as DistributedSampler with drop_last). ``set_epoch(e, skip)``
    starts the epoch ``skip`` samples in (resume mid-epoch). with_epoch: yield ``(epoch, index)`` pairs
    (the training dataset augments by epoch; persistent loader workers learn it from the pair).

    Exactness over process counts: with a global batch B divisible by the world size W and per-rank batches
    of B / W, global batch k of an epoch is the set of positions kB .. kB + B - 1 of the shuffled order on
    any W, and every W gives floor(n / B) batches per epoch; so 1 process, 4 processes on one machine and
    2 x 2 on two machines train on the same samples in the same steps (tests/test_train.py).
    """

    def __init__(self, n: int, rank: int, world: int, seed: int, shuffle: bool = True, with_epoch: bool = False):
        self.n, self.rank, self.world, self.seed, self.shuffle = n, rank, world, seed, shuffle
        self.with_epoch = with_epoch
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
        share = self.indices()[self.skip:]
        return iter([(self.epoch, i) for i in share] if self.with_epoch else share)

    def __len__(self) -> int:
        return self.n // self.world - self.skip


def loader_workers(setting: int | str, cuda: bool) -> int:
    """``data.num_workers``: a number, or ``auto``: on a GPU, the cores this process may use divided by the
    training processes on this machine (``LOCAL_WORLD_SIZE``, set by torchrun), minus one for the training
    process itself; on the CPU 0 (the cores run the step, and a prepared item costs a few ms)."""
    if setting != "auto":
        return int(setting)
    if not cuda:
        return 0
    from psdif.io import cpu_count

    return max(1, cpu_count() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1)
