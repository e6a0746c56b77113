"""Atomic writes and the clean-up of what a killed writer leaves."""

from __future__ import annotations

from psdif.io import atomic_write_text, remove_stale_temporaries


def test_remove_stale_temporaries_leaves_results(tmp_path):
    atomic_write_text(tmp_path / "a" / "keep.png", "x")
    (tmp_path / "a" / ".keep2.png.abc123.tmp").write_text("half")  # what a SIGKILLed writer leaves
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".x.tmp").write_text("half")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.png"]


def test_atomic_writes_get_the_umask_permissions_not_0600(tmp_path):
    """Files written through a temporary file get what a plain open() would give (labels were 0600)."""
    import os

    import numpy as np

    from psdif.data.images import write_png
    from psdif.io import file_mode

    old = os.umask(0o022)
    file_mode.cache_clear()
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        write_png(tmp_path / "l.png", np.zeros((2, 2), np.uint8))
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
        file_mode.cache_clear()
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "l.png").stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------------------ full disk

import errno
from pathlib import Path

import numpy as np
import pytest

from psdif.io import DiskFullError, atomic_write_bytes, save_torch, write_json


def _no_space(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _half_then(exc):
    """A Path writer that puts a few bytes on disk and then fails like a full disk."""
    real = Path.write_bytes

    def write(self, data, *a, **k):
        real(self, bytes(data)[:3] if isinstance(data, (bytes, bytearray)) else b"hal")
        raise exc
    return write


def _assert_clean_failure(folder: Path, target: Path, before: bytes | None, err: pytest.ExceptionInfo):
    msg = str(err.value)
    assert str(target) in msg and "disk is full" in msg, msg
    assert err.value.errno == errno.ENOSPC
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    if before is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == before  # the previous complete file is untouched


@pytest.mark.parametrize("writer", ["bytes", "text", "json", "png"])
def test_full_disk_names_the_file_and_leaves_nothing_half_written(tmp_path, monkeypatch, writer):
    from psdif.data.images import write_png
    from psdif.io import atomic_write_text

    target = tmp_path / f"out.{writer}"
    target.write_bytes(b"previous complete file")
    nospace = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", _half_then(nospace))
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _half_then(nospace)(self, b"x"))
    with pytest.raises(DiskFullError) as err:
        {"bytes": lambda: atomic_write_bytes(target, b"new content"),
         "text": lambda: atomic_write_text(target, "new content"),
         "json": lambda: write_json(target, {"a": 1}),
         "png": lambda: write_png(target, np.zeros((4, 4), np.uint8))}[writer]()
    _assert_clean_failure(tmp_path, target, b"previous complete file", err)


@pytest.mark.parametrize("failure", ["oserror", "torch_enforce"])
def test_full_disk_in_torch_save_names_the_checkpoint(tmp_path, monkeypatch, failure):
    import torch

    target = tmp_path / "ckpt" / "last.pt"

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        # what torch.save reports when its C++ writer cannot write (seen on a full disk)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                           "writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(DiskFullError) as err:
        save_torch(target, {"w": torch.zeros(3)})
    _assert_clean_failure(target.parent, target, None, err)


@pytest.mark.parametrize("writer", ["save_torch", "save_checkpoint", "save_encoder"])
def test_torch_unexpected_pos_on_a_full_disk_names_the_file(tmp_path, monkeypatch, writer):
    """torch's zip writer, when the disk fills while it finishes the file, says only "[enforce fail at
    inline_container.cc:672] . unexpected pos ..." (no path, no cause): every torch writer (the training
    checkpoint, the pretrained encoder, any save_torch) names the file and says the disk is full."""
    import torch

    from psdif.checkpoint import Progress, save_checkpoint

    target = tmp_path / "run" / "last.pt"

    def broken_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 most of a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8640 vs 8530")

    monkeypatch.setattr(torch, "save", broken_save)
    net = torch.nn.Linear(2, 2)

    class Nets:
        depth = pose = net

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(DiskFullError) as err:
        if writer == "save_torch":
            save_torch(target, {"w": torch.zeros(3)})
        elif writer == "save_checkpoint":
            save_checkpoint(target, {"k": 1}, Progress(), Nets, opt, sched, [{}], {})
        else:
            from psdif.pretrain import save_encoder
            save_encoder(target, net.state_dict(), {"key": "x"})
    _assert_clean_failure(target.parent, target, None, err)
    assert "unexpected pos" in str(err.value)  # torch's words kept after ours, for a bug report


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch):
    """Only a full disk is reworded: a permission error stays what it is."""
    monkeypatch.setattr(Path, "write_bytes", _half_then(PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(PermissionError):
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    assert not list(tmp_path.iterdir())


class _RunsCode:
    """Unpickling this calls ``os.system`` (a crafted checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("reader", ["last.pt", "teacher", "model.pt"])
def test_a_crafted_torch_file_is_refused_in_our_words(tmp_path, reader):
    """Every loader of our own torch files (the training checkpoint, the teacher, a trained model) names the
    file and the refused object, runs nothing, and never passes on torch's advice to load the file with
    ``weights_only=False`` (which would run the payload)."""
    import torch

    from psdif.checkpoint import load_checkpoint
    from psdif.models import load_depth_model
    from psdif.semantics.teacher import load_teacher

    marker, path = tmp_path / "payload_ran", tmp_path / "crafted.pt"
    torch.save({"format": 2, "params": _RunsCode(marker)}, path)
    load = {"last.pt": lambda: load_checkpoint(path, {"k": 1}), "teacher": lambda: load_teacher(path),
            "model.pt": lambda: load_depth_model(path)}[reader]
    with pytest.raises(Exception) as err:
        load()
    msg = str(err.value)
    assert str(path) in msg and "posix.system" in msg and "refused" in msg, msg
    assert "weights_only" not in msg and "Re-running" not in msg, msg
    assert not marker.exists()
