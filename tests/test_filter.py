"""Static-frame filter on hand-built drives and on the real KITTI sample."""

from __future__ import annotations

import numpy as np
from PIL import Image

from psdif.data import kitti
from psdif.data.kitti import FrameRef
from psdif.data.static_filter import agreement, candidate_frames, drive_motion, filter_lists

FOLDER = "2000_01_01/2000_01_01_drive_0001_sync"


def _write_drive(root, speeds, oxts_missing=(), moving_images=None):
    """A drive whose frame i has OXTS forward speed speeds[i]; images shift when the car moves."""
    rng = np.random.default_rng(0)
    texture = (rng.random((40, 400)) * 255).astype(np.uint8)
    x = 0
    for i, v in enumerate(speeds):
        x += int(round(v))  # image content shifts with the distance travelled
        for cam in (2, 3):
            p = root / FOLDER / f"image_0{cam}" / "data" / f"{i:010d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.repeat(texture[:, x:x + 64, None], 3, axis=2)).save(p)
        if i not in oxts_missing:
            o = root / FOLDER / "oxts" / "data" / f"{i:010d}.txt"
            o.parent.mkdir(parents=True, exist_ok=True)
            fields = np.zeros(30)
            fields[8] = v
            o.write_text(" ".join(f"{f:.6f}" for f in fields))


def test_oxts_speed_decides_static(tmp_path):
    speeds = [8, 8, 8, 0, 0, 0, 0.3, 8, 8, 8]
    _write_drive(tmp_path, speeds)
    dm = drive_motion(tmp_path, FOLDER, min_speed=0.5, min_image_motion=1.0)
    assert dm.static == {3, 4, 5, 6}
    assert candidate_frames(dm) == [1, 2, 7, 8]  # frames 0 and 9 lack a neighbour


def test_image_motion_where_oxts_is_missing(tmp_path):
    speeds = [8, 8, 0, 0, 8, 8]
    _write_drive(tmp_path, speeds, oxts_missing=range(6))
    dm = drive_motion(tmp_path, FOLDER, min_speed=0.5, min_image_motion=1.0)
    # content offsets 8, 16, 16, 16, 24, 32: only frame 2 equals both of its neighbours
    assert dm.static == {2} and dm.speed == {}
    assert dm.image_motion[1] > 1.0


def _listed(frames, sides=("l", "r"), folder=FOLDER):
    return [FrameRef(folder, i, side) for i in frames for side in sides]


def test_filter_keeps_listed_moving_frames_in_list_order(tmp_path):
    speeds = [8, 8, 8, 0, 0, 0, 0.3, 8, 8, 8]
    _write_drive(tmp_path, speeds)
    train = _listed([8, 1, 2, 3, 4, 9]) + _listed([5], folder="2000_01_01/2000_01_01_drive_0002_sync")
    val = _listed([7])
    res = filter_lists(tmp_path, train, val, 0.5, 1.0, drop_static=True, val_fraction=0.0, progress=False)
    assert res.train == _listed([8, 1, 2]) and res.val == _listed([7])   # order of the list kept
    assert res.dropped == {"drive not on disk": 2, "frame or a neighbour not on disk": 2, "static": 4}
    assert res.static_listed == 4
    kept = filter_lists(tmp_path, train, val, 0.5, 1.0, drop_static=False, val_fraction=0.0, progress=False)
    assert kept.train == _listed([8, 1, 2, 3, 4]) and kept.static_listed == 4 and kept.dropped["static"] == 0


def test_filter_carves_val_by_hash_when_the_split_has_no_val_list(tmp_path):
    _write_drive(tmp_path, [8] * 40)
    train = _listed(range(1, 39))
    res = filter_lists(tmp_path, train, [], 0.5, 1.0, drop_static=True, val_fraction=0.3, progress=False)
    assert res.val and res.train and sorted(res.train + res.val) == sorted(train)
    again = filter_lists(tmp_path, list(reversed(train)), [], 0.5, 1.0, drop_static=True, val_fraction=0.3,
                         progress=False)
    assert set(again.val) == set(res.val)  # the same frames, whatever the order


def test_real_sample_is_moving(kitti_mini):
    """Drive 0001 moves at ~13 m/s (OXTS 0-4); frames 5 and 25 have no OXTS and fall back to images."""
    dm = drive_motion(kitti_mini, "2011_09_26/2011_09_26_drive_0001_sync", 0.5, 1.0)
    assert dm.static == set()
    assert min(dm.speed.values()) > 10
    assert set(dm.image_motion) == {5}  # 25 has no neighbour on disk
    assert candidate_frames(dm) == [1, 2, 3, 4]


def test_agreement_counts_frames_not_sides():
    a = [kitti.FrameRef("d", 1, "l"), kitti.FrameRef("d", 1, "r"), kitti.FrameRef("d", 2, "l")]
    b = [kitti.FrameRef("d", 1, "r"), kitti.FrameRef("d", 3, "l")]
    r = agreement(a, b)
    assert r["published_recall"] == 0.5 and r["kept_precision"] == 0.5
