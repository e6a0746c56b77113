"""KITTI raw I/O against the real drive-0001 sample and hand-built files."""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from psdif.data.images import ImageError, read_image
from psdif.data import kitti

DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def _reference_depth_map(calib_dir: Path, velo_path: Path, cam: int, vel_depth: bool) -> np.ndarray:
    """design.md §4.3 written out literally, one point and one group at a time (slow, obviously correct)."""
    cc = kitti.read_calib_file(calib_dir / "calib_cam_to_cam.txt")
    vc = kitti.read_calib_file(calib_dir / "calib_velo_to_cam.txt")
    velo2cam = np.vstack([np.hstack([vc["R"].reshape(3, 3), vc["T"][:, None]]), [0, 0, 0, 1]])
    r_rect = np.eye(4)
    r_rect[:3, :3] = cc["R_rect_00"].reshape(3, 3)
    p = cc[f"P_rect_0{cam}"].reshape(3, 4) @ r_rect @ velo2cam
    w, h = (int(x) for x in cc[f"S_rect_0{cam}"])
    velo = np.fromfile(velo_path, dtype=np.float32).reshape(-1, 4).copy()
    velo[:, 3] = 1
    velo = velo[velo[:, 0] >= 0]
    depth = np.zeros((h, w))
    kept = []
    for point in velo:
        q = p @ point
        x, y = q[0] / q[2], q[1] / q[2]
        z = point[0] if vel_depth else q[2]
        u, v = np.round(x) - 1, np.round(y) - 1
        if 0 <= u < w and 0 <= v < h:
            kept.append((int(u), int(v), z))
            depth[int(v), int(u)] = z
    groups = defaultdict(list)
    for u, v, z in kept:
        groups[v * (w - 1) + u - 1].append((u, v, z))
    for members in groups.values():
        if len(members) > 1:
            u0, v0, _ = members[0]
            depth[v0, u0] = min(z for _, _, z in members)
    depth[depth < 0] = 0
    return depth.astype(np.float32)


@pytest.mark.parametrize("frame", [5, 25])
def test_generate_depth_map_matches_official_gt(kitti_mini, frame):
    pred = kitti.generate_depth_map(kitti_mini / "2011_09_26", kitti.velodyne_path(kitti_mini, DRIVE, frame))
    gt = kitti.read_depth_png(kitti_mini / "depth_groundtruth/2011_09_26_drive_0001_sync/proj_depth/groundtruth"
                              / f"image_02/{frame:010d}.png")
    assert pred.shape == gt.shape == (375, 1242) and pred.dtype == np.float32
    common = (pred > 0) & (gt > 0)
    assert common.sum() > 5000
    ratio = pred[common] / gt[common]
    assert abs(np.median(ratio) - 1) < 0.02          # measured 0.9963 (frame 5), 0.9957 (frame 25)
    assert np.mean(np.abs(ratio - 1) < 0.05) >= 0.90  # measured 97.9 %, 97.9 %


@pytest.mark.parametrize("vel_depth,cam", [(False, 2), (True, 2), (False, 3)])
def test_generate_depth_map_bit_exact_against_literal_reference(kitti_mini, vel_depth, cam):
    velo = kitti.velodyne_path(kitti_mini, DRIVE, 0)
    fast = kitti.generate_depth_map(kitti_mini / "2011_09_26", velo, cam=cam, vel_depth=vel_depth)
    slow = _reference_depth_map(kitti_mini / "2011_09_26", velo, cam, vel_depth)
    np.testing.assert_array_equal(fast, slow)


def test_depth_map_duplicate_groups_hand_case(tmp_path):
    """Identity calibration on a 4x3 image: hand-placed points exercise overwrite, min and the row wrap."""
    date = tmp_path / "2000_01_01"
    date.mkdir()
    eye = " ".join(str(x) for x in np.eye(3).ravel())
    # P_rect_02 = [I | 0]; velodyne frame = camera frame; image 4 wide, 3 high
    (date / "calib_cam_to_cam.txt").write_text(
        f"S_rect_02: 4 3\nR_rect_00: {eye}\nP_rect_02: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    (date / "calib_velo_to_cam.txt").write_text(f"R: {eye}\nT: 0 0 0\n")
    # pixel (u, v) = round(x/z) - 1; choose z as depth; points (u, v, z):
    pts = [(1, 0, 5.0), (1, 0, 3.0),   # same pixel: overwritten by 3, group min 3 -> 3
           (3, 0, 2.0), (0, 1, 7.0),   # (3,0) and (0,1) share the off-by-one index 0*3+3-1 = 1*3+0-1 = 2
           (2, 2, 9.0)]
    arr = np.array([[(u + 1) * z, (v + 1) * z, z, 0.0] for u, v, z in pts], dtype=np.float32)
    velo = tmp_path / "scan.bin"
    arr.tofile(velo)
    d = kitti.generate_depth_map(date, velo)
    expected = np.zeros((3, 4), np.float32)
    expected[0, 1] = 3.0
    expected[0, 3] = 2.0   # first point of group {(3,0), (0,1)} gets min(2, 7)
    expected[1, 0] = 7.0   # the other pixel of the joined group keeps its own value
    expected[2, 2] = 9.0
    np.testing.assert_array_equal(d, expected)


def test_readers_on_real_sample(kitti_mini):
    img = read_image(kitti.image_path(kitti_mini, kitti.FrameRef(DRIVE, 0, "r")))
    assert img.shape == (375, 1242, 3) and img.dtype == np.uint8
    packet = kitti.read_oxts(kitti.oxts_path(kitti_mini, DRIVE, 0))
    assert packet.shape == (30,)
    assert kitti.oxts_speed(packet) == pytest.approx(np.hypot(13.172716663769, -0.12475264293164))
    ts = kitti.read_timestamps(kitti_mini / DRIVE / "image_02" / "timestamps.txt")
    assert len(ts) == 108 and 0.09 < np.median(np.diff(ts)) < 0.11
    assert ts[1] - ts[0] == pytest.approx(26.064785152 - 25.961661696, abs=1e-6)
    cc = kitti.read_camera_calib(kitti_mini / "2011_09_26", 2)
    assert cc.image_size == (375, 1242) and cc.K[0, 0] == pytest.approx(721.5377)
    assert kitti.list_frames(kitti_mini, DRIVE, 2) == [0, 1, 2, 3, 4, 5, 25]


def test_split_files_round_trip_and_errors(tmp_path, shared_data):
    frames = kitti.read_split(shared_data / "splits" / "eigen" / "test_files.txt")
    assert len(frames) == 697 and frames[0] == kitti.FrameRef("2011_09_26/2011_09_26_drive_0002_sync", 69, "l")
    zhou = kitti.read_split(shared_data / "splits" / "eigen_zhou" / "val_files.txt")
    assert len(zhou) == 4424
    out = tmp_path / "s" / "x.txt"
    kitti.write_split(out, frames[:3])
    assert kitti.read_split(out) == frames[:3]
    bad = tmp_path / "bad.txt"
    bad.write_text("2011_09_26/2011_09_26_drive_0002_sync 69 l\n2011_09_26/x 12 q\n")
    with pytest.raises(kitti.KittiError, match=r"bad\.txt:2"):
        kitti.read_split(bad)


def test_errors_name_the_file(tmp_path, kitti_mini):
    src = kitti.image_path(kitti_mini, kitti.FrameRef(DRIVE, 0, "l"))
    trunc = tmp_path / "0000000000.png"
    trunc.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(ImageError, match="0000000000.png.*truncated"):
        read_image(trunc)
    with pytest.raises(ImageError, match="missing.png: image not found"):
        read_image(tmp_path / "missing.png")
    date = tmp_path / "2011_09_26"
    shutil.copytree(kitti_mini / "2011_09_26", date, ignore=shutil.ignore_patterns("*_sync"))
    text = (date / "calib_cam_to_cam.txt").read_text().replace("P_rect_02", "P_rect_2x")
    (date / "calib_cam_to_cam.txt").write_text(text)
    with pytest.raises(kitti.KittiError, match=r"calib_cam_to_cam.txt: missing calibration entry 'P_rect_02'"):
        kitti.generate_depth_map(date, kitti.velodyne_path(kitti_mini, DRIVE, 0))
    velo = tmp_path / "v.bin"
    velo.write_bytes(b"\0" * 10)
    with pytest.raises(kitti.KittiError, match="v.bin.*truncated"):
        kitti.read_velodyne(velo)
    ox = tmp_path / "o.txt"
    ox.write_text("1 2 3")
    with pytest.raises(kitti.KittiError, match="o.txt: 3 OXTS fields, expected 30"):
        kitti.read_oxts(ox)


# ------------------------------------------------------------------------------------------ damaged inputs

def _calib_copy(kitti_mini: Path, tmp_path: Path, old: str = "", new: str = "") -> Path:
    """The real calibration folder in tmp_path, with ``old`` replaced by ``new`` in calib_cam_to_cam.txt."""
    date = tmp_path / "2011_09_26"
    shutil.copytree(kitti_mini / "2011_09_26", date, ignore=shutil.ignore_patterns("*_sync"))
    path = date / "calib_cam_to_cam.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return date


def test_empty_velodyne_scan_is_named(tmp_path, kitti_mini):
    empty = tmp_path / "0000000007.bin"
    empty.write_bytes(b"")
    with pytest.raises(kitti.KittiError, match=r"0000000007\.bin: empty file \(0 bytes\)"):
        kitti.read_velodyne(empty)
    with pytest.raises(kitti.KittiError, match=r"0000000007\.bin: empty file"):  # was IndexError in reduceat
        kitti.generate_depth_map(kitti_mini / "2011_09_26", empty)


def test_velodyne_scan_short_by_13_bytes_is_truncated(tmp_path, kitti_mini):
    """16 bytes a point: cutting 13 leaves whole float32 values (the old check passed) but a partial point."""
    src = kitti.velodyne_path(kitti_mini, DRIVE, 0)
    data = src.read_bytes()
    assert len(data) % 16 == 0
    cut = tmp_path / "0000000000.bin"
    cut.write_bytes(data[:-13])
    with pytest.raises(kitti.KittiError) as err:
        kitti.read_velodyne(cut)
    msg = str(err.value)
    assert str(cut) in msg and "truncated" in msg and f"{len(data) - 13} bytes" in msg and "16" in msg
    cut.write_bytes(data[:-16])  # whole points: a shorter but valid scan
    assert kitti.read_velodyne(cut).shape == (len(data) // 16 - 1, 4)


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_calibration_value_names_file_and_entry(tmp_path, kitti_mini, bad):
    date = _calib_copy(kitti_mini, tmp_path, "P_rect_02: 7.215377e+02", f"P_rect_02: {bad}")
    with pytest.raises(kitti.KittiError) as err:  # was IndexError in reduceat (no point projects)
        kitti.generate_depth_map(date, kitti.velodyne_path(kitti_mini, DRIVE, 0))
    msg = str(err.value)
    assert "calib_cam_to_cam.txt" in msg and "'P_rect_02'" in msg and bad in msg and "not finite" in msg


def test_non_numeric_calibration_value_is_not_called_missing(tmp_path, kitti_mini):
    date = _calib_copy(kitti_mini, tmp_path, "P_rect_02: 7.215377e+02", "P_rect_02: 7.215377e+O2")
    line = next(i for i, l in enumerate((date / "calib_cam_to_cam.txt").read_text().splitlines(), 1)
                if l.startswith("P_rect_02"))
    with pytest.raises(kitti.KittiError) as err:
        kitti.read_camera_calib(date, 2)
    msg = str(err.value)
    assert f"calib_cam_to_cam.txt:{line}" in msg and "'P_rect_02'" in msg and "7.215377e+O2" in msg
    assert "not a number" in msg and "missing" not in msg
    # the dataset's intrinsics (data.intrinsics: calib) report the same, not "no 12-value entry"
    from psdif.data.dataset import DataError, camera_intrinsics
    with pytest.raises(DataError, match=r"'P_rect_02'.*not a number.*7\.215377e\+O2"):
        camera_intrinsics(tmp_path, kitti.FrameRef("2011_09_26/x", 0, "l"), (375, 1242), (192, 640), "calib")
    # calib_time (a date, not numbers) is still accepted and ignored
    assert kitti.read_camera_calib(kitti_mini / "2011_09_26", 2).image_size == (375, 1242)


def test_scan_with_no_point_in_the_image_gives_an_empty_map(tmp_path, kitti_mini):
    """Every point behind the camera: an all-zero depth map (not an IndexError)."""
    scan = kitti.read_velodyne(kitti.velodyne_path(kitti_mini, DRIVE, 0)).copy()
    scan[:, 0] = -np.abs(scan[:, 0]) - 1.0
    path = tmp_path / "behind.bin"
    scan.tofile(path)
    depth = kitti.generate_depth_map(kitti_mini / "2011_09_26", path)
    assert depth.shape == (375, 1242) and depth.dtype == np.float32 and not depth.any()
