"""psdif.data.prepared: frames, labels and B_t resized once give the PNG loader's items bit for bit (flips and
jitter draws included), the stage resumes and rewrites only what changed, and bad arrays are named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from psdif.data.augment import sample_augmentation
from psdif.data.dataset import TripletDataset, collate
from psdif.data.kitti import FrameRef
from psdif.data.prepared import PreparedError, PreparedFrames, group_file, needed_frames, prepare_all
from psdif.semantics.boundary import boundary_mask, write_boundary_png
from psdif.semantics.labels import label_path, write_label_png
from tests.test_data import FOLDER, frame_labels, targets, write_tiny_kitti

H, W = 48, 128
KINDS = ("images", "labels", "boundaries")


def run_prepare(root: Path, raw, labels, boundary, frames, h=H, w=W, workers=1, digests=None):
    manifests = {k: root / "manifests" / f"prepared_{k}.json" for k in KINDS}
    prepare_all(str(raw), str(labels), str(boundary), "png", h, w, frames, root / "prepared", manifests,
                digests or {k: "v1" for k in KINDS}, workers=workers, progress=False)
    return manifests


def assert_items_equal(a, b, where=""):
    for f in ("images", "jitter", "jitter_order", "jittered", "K", "inv_K", "labels", "boundary"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f"{where}: {f} differs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    raw, labels, boundary = write_tiny_kitti(root, frames=range(0, 12))
    frames = targets(range(1, 11)) + targets(range(2, 9), "r")
    manifests = run_prepare(root, raw, labels, boundary, frames, workers=2)
    return root, raw, labels, boundary, frames, manifests


@pytest.mark.parametrize("intrinsics", ["calib", "kitti_normalised"])
def test_prepared_items_equal_png_items_bit_for_bit(tiny, intrinsics):
    """Every item of two epochs (flips, jitter draws), both cameras: the same bytes from the arrays as from PNGs."""
    root, raw, labels, boundary, frames, manifests = tiny
    png = TripletDataset(raw, frames, H, W, labels, boundary, "png", train=True, seed=3, intrinsics=intrinsics)
    prep = TripletDataset(raw, frames, H, W, None, None, "png", train=True, seed=3, intrinsics=intrinsics,
                          prepared=PreparedFrames(manifests))
    for epoch in (0, 1):
        for i in range(len(frames)):
            assert_items_equal(png[(epoch, i)], prep[(epoch, i)], f"epoch {epoch} item {i}")
    draws = [sample_augmentation(3, e, i) for e in (0, 1) for i in range(len(frames))]
    assert any(d.flip for d in draws) and any(not d.flip for d in draws)  # both cases were compared
    assert any(d.jitter for d in draws) and any(d.jitter is None for d in draws)
    # the unpacked batch the networks see, by hand from the PNG: the flipped left-camera labels of frame 1
    i = next(i for i in range(len(frames)) if sample_augmentation(3, 0, i).flip and frames[i].side == "l")
    batch = collate([prep[(0, i)]]).unpack()
    expected = torch.from_numpy(frame_labels(frames[i].frame)[::2, ::2].copy()).long().flip(-1)
    assert torch.equal(batch.labels[0, 0], expected)


def test_manifest_lists_each_target_and_neighbours(tiny):
    root, raw, labels, boundary, frames, manifests = tiny
    meta = json.loads(manifests["images"].read_text())
    assert meta["height"] == H and meta["width"] == W and meta["enabled"]
    assert meta["groups"][f"{FOLDER} l"]["frames"] == list(range(0, 12))  # targets 1..10 and their neighbours
    assert meta["groups"][f"{FOLDER} r"]["frames"] == list(range(1, 10))
    assert meta["groups"][f"{FOLDER} l"]["image_hw"] == [96, 256]
    arr = np.load(group_file(root / "prepared" / "boundaries", FOLDER, "r"))
    assert arr.shape == (9, H, W // 8) and arr.dtype == np.uint8  # B_t packed 8 pixels a byte
    assert needed_frames([FrameRef("d/x", 5, "l"), FrameRef("d/x", 6, "l")]) == {("d/x", "l"): [4, 5, 6, 7]}


def test_new_labels_rewrite_only_labels_and_a_lost_group_is_redone(tmp_path):
    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 8))
    frames = targets(range(1, 7)) + targets(range(1, 7), "r")
    manifests = run_prepare(tmp_path, raw, labels, boundary, frames)
    files = {k: {s: group_file(tmp_path / "prepared" / k, FOLDER, s) for s in "lr"} for k in KINDS}
    stamp = {k: {s: os.stat(p).st_mtime_ns for s, p in v.items()} for k, v in files.items()}
    image_manifest = manifests["images"].read_bytes()

    # the pseudo-labels change (new labels manifest digest): label arrays rewritten, images kept
    for f in range(0, 8):
        write_label_png(label_path(labels, FOLDER, "l", f), np.full((96, 256), 4, np.uint8))
    run_prepare(tmp_path, raw, labels, boundary, frames, digests={"images": "v1", "labels": "v2", "boundaries": "v1"})
    assert os.stat(files["images"]["l"]).st_mtime_ns == stamp["images"]["l"]
    assert manifests["images"].read_bytes() == image_manifest
    assert os.stat(files["labels"]["l"]).st_mtime_ns != stamp["labels"]["l"]
    assert (np.load(files["labels"]["l"]) == 4).all()

    # a group lost (killed before its rename): only that group is written again
    files["images"]["r"].unlink()
    run_prepare(tmp_path, raw, labels, boundary, frames, digests={"images": "v1", "labels": "v2", "boundaries": "v1"})
    assert os.stat(files["images"]["l"]).st_mtime_ns == stamp["images"]["l"]
    assert files["images"]["r"].exists() and manifests["images"].read_bytes() == image_manifest
    assert not list((tmp_path / "prepared").rglob("*.tmp"))


def test_unprepared_frame_wrong_size_and_bad_array_are_named(tiny, tmp_path):
    root, raw, labels, boundary, frames, manifests = tiny
    prepared = PreparedFrames(manifests)
    ds = TripletDataset(raw, [FrameRef(FOLDER, 10, "r")], H, W, None, None, "png", train=False, seed=0,
                        intrinsics="calib", prepared=prepared)
    with pytest.raises(PreparedError, match=rf"frame {FOLDER} 10 r \(target {FOLDER} 10 r\).*dvc repro prepare"):
        ds[0]
    with pytest.raises(PreparedError, match="prepared at 48 x 128, training at 64 x 128"):
        TripletDataset(raw, frames, 64, W, None, None, "png", train=False, seed=0, intrinsics="calib",
                       prepared=prepared)
    # an array that does not hold what its manifest says (another size, a truncated copy)
    meta = json.loads(manifests["labels"].read_text())
    bad_root = tmp_path / "bad"
    bad = bad_root / meta["groups"][f"{FOLDER} l"]["file"]
    bad.parent.mkdir(parents=True)
    np.save(bad, np.zeros((3, H, W), np.uint8))
    manifest = tmp_path / "labels.json"
    manifest.write_text(json.dumps({**meta, "root": str(bad_root)}))
    ds = TripletDataset(raw, frames[:1], H, W, None, None, "png", train=False, seed=0, intrinsics="calib",
                        prepared=PreparedFrames({"images": manifests["images"], "labels": manifest}))
    with pytest.raises(PreparedError, match=rf"{bad}: holds uint8 \(3, 48, 128\).*uint8 \(12, 48, 128\)"):
        ds[0]


def test_persistent_workers_follow_the_epochs(tiny):
    """A DataLoader with persistent workers and the training sampler's (epoch, index) keys: every epoch's
    items are the ones the dataset gives in-process for that epoch (the workers are never told the epoch)."""
    from torch.utils.data import DataLoader

    from psdif.distributed import EpochSampler

    root, raw, labels, boundary, frames, manifests = tiny
    ds = TripletDataset(raw, frames, H, W, None, None, "png", train=True, seed=3, intrinsics="calib",
                        prepared=PreparedFrames(manifests))
    sampler = EpochSampler(len(ds), 0, 1, seed=3, with_epoch=True)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate, num_workers=2,
                        persistent_workers=True, drop_last=True)
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        got = list(loader)
        keys = list(sampler)
        assert len(got) == len(keys) // 4
        for b, batch in enumerate(got):
            assert_items_equal(batch, collate([ds[k] for k in keys[4 * b: 4 * b + 4]]), f"epoch {epoch} batch {b}")


def test_real_kitti_sample_prepared_at_paper_size(kitti_mini, tmp_path):
    """Real drive 0001 at 192 x 640 (both cameras), pseudo-labels and B_t written here: arrays == PNG items."""
    rng = np.random.default_rng(0)
    folder = "2011_09_26/2011_09_26_drive_0001_sync"
    for side in "lr":
        for f in range(6):
            lab = rng.integers(0, 19, size=(375 // 25 + 1, 1242 // 25 + 1)).astype(np.uint8)
            lab = np.kron(lab, np.ones((25, 25), np.uint8))[:375, :1242]
            write_label_png(label_path(tmp_path / "labels", folder, side, f), lab)
            write_boundary_png(label_path(tmp_path / "bnd", folder, side, f), boundary_mask(lab, 5, 10))
    frames = [FrameRef(folder, f, s) for s in "lr" for f in range(1, 5)]
    manifests = run_prepare(tmp_path, kitti_mini, tmp_path / "labels", tmp_path / "bnd", frames, 192, 640, workers=2)
    png = TripletDataset(kitti_mini, frames, 192, 640, tmp_path / "labels", tmp_path / "bnd", "png", train=True,
                         seed=0, intrinsics="calib")
    prep = TripletDataset(kitti_mini, frames, 192, 640, None, None, "png", train=True, seed=0, intrinsics="calib",
                          prepared=PreparedFrames(manifests))
    for i in range(len(frames)):
        assert_items_equal(png[i], prep[i], f"item {i}")
    assert json.loads(manifests["images"].read_text())["groups"][f"{folder} l"]["image_hw"] == [375, 1242]


def test_worker_processes_start_after_the_parent_used_opencv_threads(tmp_path):
    """The prepare and boundary pools fork after this process ran OpenCV on several threads (as a stage does
    after reading a frame): the children must not wait forever on the parent's OpenCV thread pool."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import cv2, numpy as np
        from pathlib import Path
        cv2.setNumThreads(2)
        cv2.resize(np.zeros((375, 1242, 3), np.uint8), (640, 192), interpolation=cv2.INTER_AREA)  # pool busy
        from tests.test_data import write_tiny_kitti, targets
        from tests.test_prepared import run_prepare
        from psdif.semantics.boundary import boundary_frames
        from psdif.semantics.labels import label_path, read_label_png
        root = Path({str(tmp_path)!r})
        raw, labels, boundary = write_tiny_kitti(root, frames=range(0, 6), sides=("l",))
        run_prepare(root, raw, labels, boundary, targets(range(1, 5)), workers=2)
        srcs = [label_path(labels, "2011_09_26/2011_09_26_drive_0001_sync", "l", f) for f in range(6)]
        boundary_frames(srcs, [root / "b" / f"{{f}}.png" for f in range(6)], read_label_png, 5, 10,
                        progress=False, workers=2)
        assert cv2.getNumThreads() == 2  # the parent's setting is back
        print("done")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-3000:]


def test_a_kept_array_is_checked_against_the_manifest_and_a_changed_one_is_rewritten(tmp_path, monkeypatch,
                                                                                       capsys):
    """An array overwritten with another group's bytes is seen (its size and mtime changed, so it is hashed)
    and written again; the manifests keep their bytes. An array whose size and mtime match its record is not
    read again; a touched one is hashed once and kept."""
    import psdif.data.prepared as prepared

    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 8))
    frames = targets(range(1, 7)) + targets(range(1, 7), "r")
    manifests = run_prepare(tmp_path, raw, labels, boundary, frames)
    before = {k: m.read_bytes() for k, m in manifests.items()}
    files = {s: group_file(tmp_path / "prepared" / "images", FOLDER, s) for s in "lr"}
    original = files["l"].read_bytes()
    assert original != files["r"].read_bytes()

    hashed = []
    real_md5 = prepared._md5
    monkeypatch.setattr(prepared, "_md5", lambda path: hashed.append(Path(path).name) or real_md5(path))
    capsys.readouterr()
    run_prepare(tmp_path, raw, labels, boundary, frames)
    assert hashed == []  # nothing changed: stat only
    assert "prepare images: 2 arrays kept, 0 missing and 0 changed since the manifest: nothing to redo" in \
        capsys.readouterr().out

    files["l"].write_bytes(files["r"].read_bytes())  # another group's array (same shape)
    stamp_r = os.stat(files["r"]).st_mtime_ns
    run_prepare(tmp_path, raw, labels, boundary, frames)
    assert "prepare images: 1 array kept, 0 missing and 1 changed since the manifest: re-preparing 1" in \
        capsys.readouterr().out
    assert files["l"].read_bytes() == original and os.stat(files["r"]).st_mtime_ns == stamp_r
    assert {k: m.read_bytes() for k, m in manifests.items()} == before

    os.utime(files["r"], ns=(stamp_r + 10**9, stamp_r + 10**9))  # touched, same bytes: hashed once, kept
    hashed.clear()
    run_prepare(tmp_path, raw, labels, boundary, frames)
    assert hashed == ["image_03.npy"] and os.stat(files["r"]).st_mtime_ns == stamp_r + 10**9
    hashed.clear()
    run_prepare(tmp_path, raw, labels, boundary, frames)
    assert hashed == []
    assert {k: m.read_bytes() for k, m in manifests.items()} == before
