"""Processes and samples: joining a ``torchrun`` process group, and each rank's exact share of an epoch.

``train.batch_size`` is the GLOBAL batch: it is split evenly over the ranks, and every rank draws its
samples from one (seed, epoch)-shuffled order, so a run sees the same samples in the same steps on any
number of processes (see ``docs/design.md``, "Training").
"""

from __future__ import annotations

import os
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
