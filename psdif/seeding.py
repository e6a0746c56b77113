"""Seeding and deterministic kernels: the same params give the same numbers, bit for bit.

:func:`seed_everything` seeds every random source a stage may touch (Python's ``random``, NumPy's global
state, torch on the CPU and every GPU); call it right before building a network, so that its initial
weights depend on the seed and not on what ran earlier in the process. :func:`deterministic_kernels`
additionally asks cuDNN / torch for deterministic algorithms while a block runs (CPU kernels already are).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy.random`` (global state) and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """cuDNN without autotuning and with deterministic algorithms, torch's deterministic mode (warnings only,
    for ops without a deterministic version) while the block runs; the previous settings come back after."""
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])
