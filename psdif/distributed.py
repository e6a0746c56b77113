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
