"""Video ingest (psdif.video): clips written here with cv2.VideoWriter (mp4v) from generated frames, ingested, and
read back with psdif.data.kitti. Frame counts and times against the hand computation of the sampling rule, frames
against OpenCV's own decoding (and its own rotation), calibration against the camera mapped by hand, undistortion
against a line rendered through known radial distortion."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest

from psdif.camera import Camera, read_camera
from psdif.data import kitti
from psdif.data.images import read_image
from psdif.data.kitti import FrameRef
from psdif.video import (RECORD, TMP, Drive, Probe, ingest_clips, rotated_camera, split_by_clip)

W, H = 96, 64
CAMERA = Camera(160.0, 150.0, 95.0, 63.5, 2 * W, 2 * H)  # calibrated at twice the clips' size (same aspect)


def frames(n: int, scene: int = 0, w: int = W, h: int = H) -> list[np.ndarray]:
    """BGR frames of a smooth pattern moving 3 px a frame; ``scene`` 1 is another pattern (a scene cut)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for i in range(n):
        u = x + 3 * i
        g = 128 + 60 * np.sin(u / 7.0) + 40 * np.cos(y / 5.0) if scene == 0 else 40 + 30 * np.cos((u + y) / 11.0)
        g = g.astype(np.uint8)
        out.append(np.dstack([g, np.roll(g, 5, axis=1), 255 - g]))
    return out


def write_mp4(path, bgr: list[np.ndarray], fps: float = 25.0):
    h, w = bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in bgr:
        writer.write(f)
    writer.release()
    return path


def decode(path, auto_rotate: bool = False) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, int(auto_rotate))
    out = []
    while (got := cap.read())[0]:
        out.append(got[1])
    cap.release()
    return out


def set_rotation_90(path) -> None:
    """Write a 90-degree display matrix into the mp4's track header (what a phone filming upright stores)."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert data[i + 4] == 0  # version 0: 4-byte times; the matrix follows 20 + 16 bytes of fields
    start = i + 8 + 20 + 16
    assert struct.unpack(">9i", data[start:start + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
    data[start:start + 36] = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def drive_frames(root, drive: Drive) -> list[np.ndarray]:
    return [read_image(kitti.image_path(root, FrameRef(drive.folder, i, "l"))) for i in range(drive.frames)]


def test_sampling_by_timestamps_and_read_back(tmp_path):
    """25 fps sampled at 10 fps: frame times 40 k ms, instants 100 k ms -> the first frame at or after each:
    0, 120, 200, 320, 400, 520, 600, 720 (frames 0, 3, 5, 8, 10, 13, 15, 18 of 20)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "a.mp4", frames(20))
    out = tmp_path / "raw"
    report = ingest_clips(clips, out, CAMERA, fps=10, progress=False)
    assert report.skipped == [] and report.size == (W, H) and len(report.drives) == 1
    drive = report.drives[0]
    assert drive.folder == "video/video_drive_0001_sync" and drive.frames == 8
    assert kitti.list_frames(out, drive.folder) == list(range(8))
    times = json.loads((out / drive.folder / RECORD).read_text())["times_ms"]
    assert times == [0, 120, 200, 320, 400, 520, 600, 720]
    decoded = decode(clips / "a.mp4")
    for i, source in enumerate([0, 3, 5, 8, 10, 13, 15, 18]):
        assert np.array_equal(drive_frames(out, drive)[i], decoded[source][..., ::-1])
    calib = kitti.read_camera_calib(out / "video", 2)
    assert calib.image_size == (H, W)
    np.testing.assert_allclose(calib.K, [[80, 0, 47.25], [0, 75, 31.5], [0, 0, 1]], atol=1e-9)  # hand: cx 0.5(95.5)-0.5
    np.testing.assert_allclose(read_camera(out / "video" / "calib_cam_to_cam.txt").K, CAMERA.scaled(W, H).K)
    every = ingest_clips(clips, tmp_path / "all", CAMERA, fps=None, progress=False)
    assert [d.frames for d in every.drives] == [20]


def write_vfr_mp4(path, bgr: list[np.ndarray], times_ms: list[int]):
    """An mp4 whose frames carry the given presentation times (PyAV: a variable frame rate, as phones record)."""
    import fractions

    av = pytest.importorskip("av", reason="PyAV writes the variable-frame-rate clip (pip install av)")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=1000)
        stream.width, stream.height, stream.pix_fmt = bgr[0].shape[1], bgr[0].shape[0], "yuv420p"
        stream.time_base = fractions.Fraction(1, 1000)
        for t, frame in zip(times_ms, bgr):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., ::-1]), format="rgb24")
            picture.pts, picture.time_base = t, fractions.Fraction(1, 1000)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    return path


def test_variable_frame_rate_keeps_its_timing(tmp_path):
    """Frames at 0, 40, 50, 130, 300, 310, 400, 560, 570, 580, 700 ms sampled at 10 fps (instants 100 k ms): by
    hand, the first frame at or after each instant, a late frame filling one instant only (none is repeated for
    the empty 200 ms instant): 0, 130, 300, 400, 560, 700 -> decoded frames 0, 3, 4, 6, 7, 10."""
    times = [0, 40, 50, 130, 300, 310, 400, 560, 570, 580, 700]
    clips = tmp_path / "clips"
    clips.mkdir()
    write_vfr_mp4(clips / "phone.mp4", frames(len(times)), times)
    report = ingest_clips(clips, tmp_path / "raw", CAMERA, fps=10, progress=False)
    (drive,) = report.drives
    record = json.loads((tmp_path / "raw" / drive.folder / RECORD).read_text())
    assert record["times_ms"] == [0, 130, 300, 400, 560, 700]
    assert record["source_frames"] == [0, 3, 4, 6, 7, 10]
    decoded = decode(clips / "phone.mp4")
    for i, source in enumerate(record["source_frames"]):
        assert np.array_equal(drive_frames(tmp_path / "raw", drive)[i], decoded[source][..., ::-1])


def test_scene_cut_and_repeats(tmp_path):
    """7 frames of one scene (frames 3 and 4 repeat frame 2), then 6 of another: two drives, of 5 and 6."""
    first = frames(7)
    first[3], first[4] = first[2].copy(), first[2].copy()
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "cut.mp4", first + frames(6, scene=1))
    report = ingest_clips(clips, tmp_path / "raw", CAMERA, fps=None, progress=False)
    assert [(d.folder.split("/")[1], d.segment, d.frames) for d in report.drives] == [
        ("video_drive_0001_sync", 0, 5), ("video_drive_0002_sync", 1, 6)]
    assert ("cut.mp4", "2 repeated frames dropped") in report.notes
    decoded = decode(clips / "cut.mp4")
    second = drive_frames(tmp_path / "raw", report.drives[1])
    assert all(np.array_equal(second[i], decoded[7 + i][..., ::-1]) for i in range(6))


def test_bad_clips_are_skipped_with_reasons(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "good.mp4", frames(5))
    data = write_mp4(tmp_path / "full.mp4", frames(12)).read_bytes()
    (clips / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (clips / "notes.mp4").write_text("not a video\n")
    write_mp4(clips / "short.mp4", frames(2))
    out = tmp_path / "raw"
    report = ingest_clips(clips, out, CAMERA, fps=None, progress=False)
    reasons = dict(report.skipped)
    assert sorted(reasons) == ["notes.mp4", "short.mp4", "truncated.mp4"]
    assert "cannot open it as a video" in reasons["notes.mp4"] and "notes.mp4" in reasons["notes.mp4"]
    assert "cannot open it as a video" in reasons["truncated.mp4"]
    assert "2 frames" in reasons["short.mp4"] and "at least 3" in reasons["short.mp4"]
    assert [(d.clip, d.frames) for d in report.drives] == [("good.mp4", 5)]
    assert sorted(p.name for p in (out / "video").iterdir()) == ["calib_cam_to_cam.txt", "video_drive_0001_sync"]
    assert not (out / TMP).exists()
    assert any("skipped short.mp4" in line for line in report.lines())


def test_rotated_camera_moves_pixels_like_cv2_rotate():
    """A pixel lit in the stored image lands where cv2.rotate puts it, and the rotated K projects it there."""
    cam = Camera(70.0, 60.0, 40.0, 20.0, W, H)
    point = np.array([0.3, -0.2, 1.0])  # a 3D point in the stored camera's frame
    u, v = (cam.K @ point)[:2] / point[2]
    image = np.zeros((H, W), np.uint8)
    image[round(v), round(u)] = 255
    for degrees, code, turn in ((90, cv2.ROTATE_90_CLOCKWISE, lambda p: np.array([-p[1], p[0], p[2]])),
                                (180, cv2.ROTATE_180, lambda p: np.array([-p[0], -p[1], p[2]])),
                                (270, cv2.ROTATE_90_COUNTERCLOCKWISE, lambda p: np.array([p[1], -p[0], p[2]]))):
        rot = rotated_camera(cam, degrees)
        rows, cols = np.nonzero(cv2.rotate(image, code))
        q = turn(point)  # the point in the turned camera's frame
        ru, rv = (rot.K @ q)[:2] / q[2]
        assert (rot.width, rot.height) == cv2.rotate(image, code).shape[::-1]
        assert (round(ru), round(rv)) == (cols[0], rows[0])


def test_portrait_clip_gets_the_common_size(tmp_path):
    """Two landscape clips and one stored landscape with 90-degree rotation metadata (upright 64x96): the output
    is 96x64, the portrait one turned, centre-cropped to 64x43 and resized, in its own date folder."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "a.mp4", frames(4))
    write_mp4(clips / "b.mp4", frames(4, scene=1))
    set_rotation_90(write_mp4(clips / "c_portrait.mp4", frames(4)))
    out = tmp_path / "raw"
    report = ingest_clips(clips, out, CAMERA, fps=None, progress=False)
    assert report.size == (W, H) and report.size_from == "the most common clip size"
    assert dict(report.resized) == {"c_portrait.mp4": "64x96: turned 90 degrees (rotation metadata), "
                                                      "centre-cropped to 64x43, resized to 96x64"}
    portrait = next(d for d in report.drives if d.clip == "c_portrait.mp4")
    assert portrait.folder == "video_2/video_2_drive_0001_sync"
    upright = decode(clips / "c_portrait.mp4", auto_rotate=True)  # OpenCV's own rotation as the reference
    assert upright[0].shape == (96, 64, 3)
    for got, ref in zip(drive_frames(out, portrait), upright):
        expected = cv2.resize(ref[26:69], (W, H), interpolation=cv2.INTER_LINEAR)[..., ::-1]
        assert np.abs(got.astype(int) - expected).max() <= 1
    # hand: stored camera 80, 75, 47.25, 31.5 (96x64); turned: fx 75, fy 80, cx 63 - 31.5, cy 47.25 (64x96);
    # cropped rows 26..68: cy 21.25 (64x43); resized by 1.5 and 64 / 43
    K = kitti.read_camera_calib(out / "video_2", 2).K
    sy = 64 / 43
    np.testing.assert_allclose(K, [[112.5, 0, 1.5 * 32 - 0.5], [0, 80 * sy, sy * 21.75 - 0.5], [0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(kitti.read_camera_calib(out / "video", 2).K, CAMERA.scaled(W, H).K)


def line_image(cam: Camera, row: float) -> np.ndarray:
    """BGR image of a dark horizontal line at ``row`` of the ideal (pinhole) image, seen through ``cam``'s
    distortion: each distorted pixel shows the ideal image at its undistorted position (cv2.undistortPoints)."""
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float64)
    pts = np.stack([u.ravel(), v.ravel()], 1)[:, None]
    ideal = cv2.undistortPoints(pts, cam.K, np.asarray(cam.distortion), P=cam.K)[:, 0, 1].reshape(v.shape)
    g = (230 - 200 * np.exp(-0.5 * ((ideal - row) / 1.2) ** 2)).astype(np.uint8)
    return np.dstack([g, g, g])


def line_rows(image: np.ndarray, near: float, columns: slice) -> np.ndarray:
    """Per column, the darkness-weighted mean row within 5 rows of ``near``."""
    grey = image[..., 1].astype(np.float64)
    rows = np.arange(int(near) - 5, int(near) + 6)
    dark = 230 - grey[rows][:, columns]
    return (rows[:, None] * dark).sum(0) / dark.sum(0)


def test_undistortion_straightens_a_line(tmp_path):
    cam = Camera(100.0, 100.0, 63.5, 47.5, 128, 96, distortion=(-0.35, 0.1, 0.0, 0.0, 0.0))
    clips = tmp_path / "clips"
    (clips / "lines").mkdir(parents=True)
    rows = (20.0, 23.0, 26.0)
    for i, row in enumerate(rows):
        cv2.imwrite(str(clips / "lines" / f"{i:04d}.png"), line_image(cam, row))
    out = tmp_path / "raw"
    report = ingest_clips(clips, out, cam, fps=None, progress=False)
    assert report.resized == [] and [d.frames for d in report.drives] == [3]
    columns = slice(20, 108)
    for image, row in zip(drive_frames(out, report.drives[0]), rows):
        bent = line_rows(cv2.imread(str(clips / "lines" / "0000.png")), rows[0], columns) if row == rows[0] else None
        if bent is not None:
            assert np.abs(bent - rows[0]).max() > 1.5  # the distortion bends the line
        assert np.abs(line_rows(image, row, columns) - row).max() < 0.3
    np.testing.assert_allclose(read_camera(out / "video" / "calib_cam_to_cam.txt").K, cam.K)


def test_split_by_clip_keeps_each_clip_in_one_list():
    drives = [Drive("video/video_drive_0001_sync", "a.mp4", 0, 6), Drive("video/video_drive_0002_sync", "a.mp4", 1, 4),
              *(Drive(f"video/video_drive_{k:04d}_sync", f"{c}.mp4", 0, 5) for k, c in zip(range(3, 7), "bcde"))]
    lists = split_by_clip(drives, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert lists == split_by_clip(drives, 0.2, 0.2, 3)
    clip_of = {d.folder: d.clip for d in drives}
    owners = {name: {clip_of[r.folder] for r in refs} for name, refs in lists.items()}
    assert len(owners["test"]) == 1 and len(owners["val"]) == 1 and len(owners["train"]) == 3
    assert not (owners["train"] & owners["val"] or owners["train"] & owners["test"] or owners["val"] & owners["test"])
    size = {d.folder: d.frames for d in drives}
    for name in ("train", "val"):
        assert all(1 <= r.frame <= size[r.folder] - 2 for r in lists[name])
    tested = {r.folder for r in lists["test"]}
    assert sorted(r.frame for r in lists["test"]) == sorted(i for f in tested for i in range(size[f]))
    assert sum(len(v) for v in lists.values()) == sum(size[f] for f in tested) + sum(
        size[d.folder] - 2 for d in drives if d.folder not in tested)
    with pytest.raises(ValueError, match="sum below 1"):
        split_by_clip(drives, 0.5, 0.5, 0)


def test_second_run_keeps_complete_drives(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_mp4(clips / "a.mp4", frames(6))
    write_mp4(clips / "b.mp4", frames(5, scene=1))
    out = tmp_path / "raw"
    first = ingest_clips(clips, out, CAMERA, fps=None, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    second = ingest_clips(clips, out, CAMERA, fps=None, progress=False)
    assert [d.kept for d in second.drives] == [True, True]
    assert [(d.folder, d.frames) for d in second.drives] == [(d.folder, d.frames) for d in first.drives]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    write_mp4(clips / "b.mp4", frames(4, scene=1))  # b changed: its drive is written again, a's kept
    third = ingest_clips(clips, out, CAMERA, fps=None, progress=False)
    assert [(d.clip, d.kept, d.frames) for d in third.drives] == [("a.mp4", True, 6), ("b.mp4", False, 4)]


def test_probe_upright_size():
    assert Probe(None, 96, 64, 90).upright == (64, 96) and Probe(None, 96, 64, 180).upright == (96, 64)
