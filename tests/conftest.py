"""Shared fixtures. Tests that need the real KITTI sample skip, saying why, when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PSDIF_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _forget_protected_trees():
    """A stage run in-process on a real-KITTI project protects its data.raw_root for the rest of the process
    (``psdif.io.protect_tree``); later tests start without it."""
    yield
    from psdif.io import unprotect_all
    unprotect_all()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real KITTI drive 0001 sample and the published splits)."""
    if not (SHARED_DATA / "kitti-mini").is_dir():
        pytest.skip(f"real KITTI sample not found at {SHARED_DATA} (set PSDIF_SHARED_DATA); present in CI")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kitti_mini(shared_data) -> Path:
    return shared_data / "kitti-mini"


@pytest.fixture()
def copy(kitti_mini, tmp_path):
    """The sample as a user's read-only KITTI copy (writable again afterwards, so tmp_path can be removed)."""
    from tests.kitti_copy import make_writable, read_only_copy

    root = read_only_copy(kitti_mini, tmp_path / "my_kitti")
    yield root
    make_writable(root)
