"""Camera files (psdif.camera) and ``psdif calibrate`` (psdif.calibrate): every format against the numbers written
into it (the KITTI one against the real sample's P_rect_02 parsed here with numpy), the size conventions by hand
and against cv2.resize, bad files named, and a calibration of rendered checkerboard videos against the K they were
rendered with."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from psdif.calibrate import Calibration, coverage, parse_pattern, refusal, spread
from psdif.camera import Camera, CameraError, read_camera
from psdif.cli import main

OPENCV_YAML = """%YAML:1.0
---
calibration_time: "Mon 01 Jan 2024"
image_width: 1280
image_height: 720
board_width: 9
board_height: 6
square_size: 2.5e-02
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [ 9.1234e+02, 0., 6.4150e+02, 0., 9.0876e+02, 3.5825e+02, 0., 0., 1. ]
distortion_coefficients: !!opencv-matrix
   rows: 5
   cols: 1
   dt: d
   data: [ -0.2875, 0.0912, 1.2e-03, -4.0e-04, -0.0121 ]
avg_reprojection_error: 0.21
"""

OPENCV_XML = """<?xml version="1.0"?>
<opencv_storage>
<image_width>640</image_width>
<image_height>480</image_height>
<camera_matrix type_id="opencv-matrix">
  <rows>3</rows>
  <cols>3</cols>
  <dt>d</dt>
  <data>
    5.2e+02 0. 3.1e+02 0. 5.3e+02 2.45e+02 0. 0. 1.</data></camera_matrix>
<distortion_coefficients type_id="opencv-matrix">
  <rows>1</rows>
  <cols>4</cols>
  <dt>d</dt>
  <data>
    0.1 -0.05 0. 0.002</data></distortion_coefficients>
</opencv_storage>
"""

ROS_YAML = """image_width: 752
image_height: 480
camera_name: narrow_stereo/left
camera_matrix:
  rows: 3
  cols: 3
  data: [458.654, 0, 367.215, 0, 457.296, 248.375, 0, 0, 1]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1, 0, 0, 0, 1, 0, 0, 0, 1]
projection_matrix:
  rows: 3
  cols: 4
  data: [458.654, 0, 367.215, 0, 0, 457.296, 248.375, 0, 0, 0, 1, 0]
"""


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def _assert_camera(cam: Camera, fx, fy, cx, cy, width, height, distortion):
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == pytest.approx((fx, fy, cx, cy, width, height))
    assert isinstance(cam.width, int) and isinstance(cam.height, int)
    if distortion is None:
        assert cam.distortion is None
    else:
        assert cam.distortion == pytest.approx(distortion)
    assert cam.model == "pinhole"


# ------------------------------------------------------------------------------------------ formats

def test_opencv_filestorage_yaml_as_calibrate_camera_writes_it(tmp_path):
    cam = read_camera(_write(tmp_path, "camera.yml", OPENCV_YAML))
    _assert_camera(cam, 912.34, 908.76, 641.5, 358.25, 1280, 720, (-0.2875, 0.0912, 1.2e-3, -4.0e-4, -0.0121))
    assert not cam.guessed and "camera.yml" in cam.source


def test_opencv_filestorage_xml(tmp_path):
    cam = read_camera(_write(tmp_path, "camera.xml", OPENCV_XML))
    _assert_camera(cam, 520, 530, 310, 245, 640, 480, (0.1, -0.05, 0.0, 0.002))


def test_ros_camera_info_yaml(tmp_path):
    cam = read_camera(_write(tmp_path, "left.yaml", ROS_YAML))
    _assert_camera(cam, 458.654, 457.296, 367.215, 248.375, 752, 480,
                   (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05, 0.0))


def _numpy_kitti_entry(path, key: str) -> np.ndarray:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return np.array(line.split()[1:], dtype=np.float64)
    raise AssertionError(f"{key} not in {path}")


@pytest.mark.parametrize("cam_id", [2, 3])
def test_kitti_calib_cam_to_cam_of_the_real_sample(kitti_mini, cam_id):
    path = kitti_mini / "2011_09_26" / "calib_cam_to_cam.txt"
    P = _numpy_kitti_entry(path, f"P_rect_0{cam_id}").reshape(3, 4)
    width, height = _numpy_kitti_entry(path, f"S_rect_0{cam_id}")
    cam = read_camera(path) if cam_id == 2 else read_camera(path, kitti_camera=cam_id)
    _assert_camera(cam, P[0, 0], P[1, 1], P[0, 2], P[1, 2], int(width), int(height), None)
    assert (cam.width, cam.height) == (1242, 375)
    np.testing.assert_allclose(cam.K, P[:, :3])
    # the size-free K is Monodepth2's KITTI constants [[0.58, 0, 0.5], [0, 1.92, 0.5]] to two decimals
    np.testing.assert_allclose(cam.normalised(), [[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]], atol=0.05)
    assert cam.normalised()[0, 0] == pytest.approx(P[0, 0] / 1242)


def test_inline_mapping_and_a_yaml_file_of_one(tmp_path):
    mapping = {"fx": 700, "fy": 710.5, "cx": 639.5, "cy": 359.5, "width": 1280, "height": 720}
    _assert_camera(read_camera(mapping), 700, 710.5, 639.5, 359.5, 1280, 720, None)
    with_dist = dict(mapping, distortion=[-0.1, 0.01, 0, 0])
    _assert_camera(read_camera(with_dist), 700, 710.5, 639.5, 359.5, 1280, 720, (-0.1, 0.01, 0, 0))
    text = "fx: 700\nfy: 710.5\ncx: 639.5\ncy: 359.5\nwidth: 1280\nheight: 720\n"
    _assert_camera(read_camera(_write(tmp_path, "cam.yaml", text)), 700, 710.5, 639.5, 359.5, 1280, 720, None)


def test_from_hfov_by_hand():
    # 90 degrees over 640 columns spanning [-0.5, 639.5]: the half width 320 px is tan(45 deg) = 1 -> fx = 320
    cam = Camera.from_hfov(90, 640, 480)
    _assert_camera(cam, 320, 320, 319.5, 239.5, 640, 480, None)
    assert cam.guessed
    # 60 degrees: fx = 320 / tan(30 deg) = 554.256...
    assert Camera.from_hfov(60, 640, 480).fx == pytest.approx(554.2562584, abs=1e-6)
    assert read_camera({"hfov_deg": 90, "width": 640, "height": 480}).guessed


def test_scaled_by_hand():
    cam = Camera(500, 400, 319.5, 239.5, 640, 480, (-0.2, 0.0, 0.0, 0.0))
    half = cam.scaled(320, 240)
    # fx' = 500/2, cx' = 0.5 (319.5 + 0.5) - 0.5 = 159.5: the centre stays the centre ((320 - 1) / 2)
    _assert_camera(half, 250, 200, 159.5, 119.5, 320, 240, (-0.2, 0.0, 0.0, 0.0))
    # a principal point at column 0: 3 (0 + 0.5) - 0.5 = 1.0 at three times the size
    corner = Camera(100, 100, 0.0, 10.0, 64, 48).scaled(192, 96)
    assert (corner.fx, corner.fy, corner.cx, corner.cy) == pytest.approx((300, 200, 1.0, 20.5))
    np.testing.assert_allclose(half.K, [[250, 0, 159.5], [0, 200, 119.5], [0, 0, 1]])


@pytest.mark.parametrize("new_w", [320, 211, 1000])
def test_scaled_principal_point_follows_cv2_resize(new_w):
    """A horizontal ramp whose value is the native column: after cv2.resize the column where the ramp reads cx is
    where the resized image shows the native column cx, i.e. the resized camera's cx."""
    width, height = 640, 8
    ramp = np.tile(np.arange(width, dtype=np.float32), (height, 1))
    resized = cv2.resize(ramp, (new_w, height), interpolation=cv2.INTER_LINEAR)[0]
    cam = Camera(500, 500, 301.25, 3.5, width, height)
    inner = slice(2, new_w - 2)  # away from the clamped borders
    expected_cx = np.interp(cam.cx, resized[inner], np.arange(new_w)[inner])
    assert cam.scaled(new_w, height).cx == pytest.approx(expected_cx, abs=1e-3)


def test_file_without_distortion_is_fine(tmp_path):
    text = OPENCV_YAML.split("distortion_coefficients")[0]
    assert read_camera(_write(tmp_path, "nodist.yaml", text)).distortion is None
    ros = ROS_YAML.split("distortion_model")[0] + ROS_YAML.split("0.0]\n")[1]
    assert read_camera(_write(tmp_path, "nodist_ros.yaml", ros)).distortion is None


# ------------------------------------------------------------------------------------------ bad files

BAD_FILES = {
    "opencv_no_width": (OPENCV_YAML.replace("image_width: 1280\n", ""), "missing key 'image_width'"),
    "opencv_skew": (OPENCV_YAML.replace("9.1234e+02, 0., 6.4150e+02", "9.1234e+02, 2.5, 6.4150e+02"), "skew"),
    "opencv_negative_fx": (OPENCV_YAML.replace("9.1234e+02, 0.", "-9.1234e+02, 0."), "focal lengths must be positive"),
    "opencv_pp_outside": (OPENCV_YAML.replace("6.4150e+02", "1.6415e+03"), "outside the 1280x720 image"),
    "ros_nan": (ROS_YAML.replace("458.654, 0, 367.215", ".nan, 0, 367.215", 1),
                "'camera_matrix' has a value that is not finite"),
    "ros_no_height": (ROS_YAML.replace("image_height: 480\n", ""), "missing key 'image_height'"),
    "ros_fisheye": (ROS_YAML.replace("plumb_bob", "equidistant"), "fisheye cameras are not supported"),
    "ros_six_coefficients": (ROS_YAML.replace("0.0]\n", "0.0, 0.1]\n", 1), "6 distortion coefficients"),
    "ros_bad_matrix": (ROS_YAML.replace("0, 0, 1]\ndistortion_model", "0, 0, 2]\ndistortion_model"),
                       "is not an intrinsics matrix"),
    "inline_unknown_key": ("fx: 1\nfy: 1\ncx: 1\ncy: 1\nwidth: 4\nheight: 4\nfocal: 3\n", "unknown key 'focal'"),
    "inline_missing_cy": ("fx: 1\nfy: 1\ncx: 1\nwidth: 4\nheight: 4\n", "missing key 'cy'"),
    "inline_float_width": ("fx: 1\nfy: 1\ncx: 1\ncy: 1\nwidth: 4.5\nheight: 4\n", "'width' = 4.5"),
    "kitti_no_p_rect_02": ("S_rect_02: 1.242e+03 3.75e+02\nP_rect_00: 1 0 0 0 0 1 0 0 0 0 1 0\n",
                           "missing calibration entry 'P_rect_02'"),
    "kitti_short_p_rect_02": ("S_rect_02: 1.242e+03 3.75e+02\nP_rect_02: 7.2e+02 0 6.0e+02 0 0 7.2e+02\n",
                              "'P_rect_02' has 6 values"),
    "not_a_mapping": ("- 1\n- 2\n", "expected a YAML mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_camera_file_is_named_with_its_key(tmp_path, case):
    text, why = BAD_FILES[case]
    name = "calib_cam_to_cam.txt" if case.startswith("kitti") else f"{case}.yaml"
    path = _write(tmp_path, name, text)
    with pytest.raises(CameraError) as err:
        read_camera(path)
    assert str(path) in str(err.value) and why in str(err.value)


def test_missing_camera_file_and_impossible_mapping(tmp_path):
    with pytest.raises(CameraError, match="camera file not found"):
        read_camera(tmp_path / "nope.yaml")
    good = {"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480}
    for key, value, why in [("fx", 0, "focal lengths must be positive"), ("cy", float("nan"), "'cy' = nan"),
                            ("cx", -3.0, "outside"), ("height", 0, "'height' = 0")]:
        with pytest.raises(CameraError, match=why) as err:
            read_camera(dict(good, **{key: value}))
        assert "<mapping>" in str(err.value)
    with pytest.raises(CameraError, match="hfov_deg"):
        Camera.from_hfov(180, 640, 480)


# ------------------------------------------------------------------------------------------ psdif calibrate

K_TRUE = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
SIZE = (640, 480)
PATTERN, SQUARE = (9, 6), 0.025


def _undistort_radial(xd: np.ndarray, yd: np.ndarray, k1: float) -> tuple[np.ndarray, np.ndarray]:
    """Invert r_d = r (1 + k1 r^2) by Newton's method (normalised coordinates)."""
    rd = np.hypot(xd, yd)
    r = rd.copy()
    for _ in range(10):
        r -= (r + k1 * r ** 3 - rd) / (1 + 3 * k1 * r ** 2)
    s = np.where(rd > 0, r / np.maximum(rd, 1e-12), 1.0)
    return xd * s, yd * s


def _render_board(R: np.ndarray, t: np.ndarray, k1: float) -> np.ndarray:
    """Grey uint8 image of the board (posed R, t; board -> camera) through K_TRUE and radial k1, by casting each
    pixel's ray (2x2 samples a pixel, centres at integer coordinates) onto the board plane."""
    width, height = SIZE
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    total = np.zeros((height, width))
    for du, dv in [(-0.25, -0.25), (-0.25, 0.25), (0.25, -0.25), (0.25, 0.25)]:
        x, y = (u + du - K_TRUE[0, 2]) / K_TRUE[0, 0], (v + dv - K_TRUE[1, 2]) / K_TRUE[1, 1]
        if k1:
            x, y = _undistort_radial(x, y, k1)
        rays = np.stack([x, y, np.ones_like(x)], axis=-1)
        depth = (R[:, 2] @ t) / (rays @ R[:, 2])
        board = (depth[..., None] * rays - t) @ R / SQUARE  # R^T (X - t), in squares
        bx, by = board[..., 0], board[..., 1]
        on_paper = (bx >= -2) & (bx < PATTERN[0] + 1) & (by >= -2) & (by < PATTERN[1] + 1) & (depth > 0)
        on_squares = (bx >= -1) & (bx < PATTERN[0]) & (by >= -1) & (by < PATTERN[1])
        black = on_squares & ((np.floor(bx) + np.floor(by)) % 2 == 0)
        total += np.where(on_paper, np.where(black, 20, 235), 110)
    return (total / 4).astype(np.uint8)


def _board_poses(n: int, k1: float, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` tilted board poses whose corners all project 25 px inside the image."""
    rng = np.random.default_rng(seed)
    corners = np.stack(np.meshgrid(np.arange(PATTERN[0]), np.arange(PATTERN[1])), -1).reshape(-1, 2) * SQUARE
    corners = np.concatenate([corners, np.zeros((len(corners), 1))], axis=1)
    centre = corners.mean(axis=0)
    poses = []
    while len(poses) < n:
        rvec = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)])
        R = cv2.Rodrigues(rvec)[0]
        aim = np.array([rng.uniform(180, 460), rng.uniform(140, 340), 1.0])
        t = rng.uniform(0.35, 0.5) * np.linalg.solve(K_TRUE, aim) - R @ centre
        image = cv2.projectPoints(corners, rvec, t, K_TRUE, np.array([k1, 0, 0, 0, 0.0]))[0].reshape(-1, 2)
        if (image > 25).all() and (image < np.array(SIZE) - 25).all():
            poses.append((R, t))
    return poses


def _write_video(path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, SIZE)
    assert writer.isOpened(), "this OpenCV cannot write mp4v"
    for grey in frames:
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.release()


@pytest.fixture(scope="module", params=[0.0, -0.2], ids=["pinhole", "k1=-0.2"])
def board_video(request, tmp_path_factory):
    """18 views of the board, each frame followed by a blank one (``--every 2`` keeps the boards)."""
    k1 = request.param
    blank = np.full(SIZE[::-1], 110, np.uint8)
    frames = [f for R, t in _board_poses(18, k1) for f in (_render_board(R, t, k1), blank)]
    path = tmp_path_factory.mktemp("video") / "board.mp4"
    _write_video(path, frames)
    return path, k1


def test_calibrate_recovers_the_rendered_camera(board_video, tmp_path, capsys):
    video, k1 = board_video
    out = tmp_path / "camera.yaml"
    rc = main(["calibrate", str(video), "--pattern", "9x6", "--square", "0.025", "--out", str(out), "--every", "2"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "found in 18 of 18 frames searched" in printed and "over 18 views" in printed
    cam = read_camera(out)
    assert (cam.width, cam.height) == SIZE and not cam.guessed
    for got, true in [(cam.fx, 500), (cam.fy, 500), (cam.cx, 320), (cam.cy, 240)]:
        assert got == pytest.approx(true, rel=0.01)
    assert cam.distortion[0] == pytest.approx(k1, abs=0.02)
    # the file is plain OpenCV: FileStorage reads the same matrix and the RMS the command printed
    fs = cv2.FileStorage(str(out), cv2.FILE_STORAGE_READ)
    np.testing.assert_allclose(fs.getNode("camera_matrix").mat(), cam.K)
    rms = fs.getNode("avg_reprojection_error").real()
    fs.release()
    assert 0 < rms < 1.0 and f"RMS reprojection error {rms:.3f} px" in printed


def test_calibrate_refuses_too_few_views_and_keeps_the_old_file(tmp_path, capsys):
    blank = np.full(SIZE[::-1], 110, np.uint8)
    frames = [_render_board(R, t, 0.0) for R, t in _board_poses(5, 0.0, seed=1)] + [blank] * 5
    video = tmp_path / "few.mp4"
    _write_video(video, frames)
    out = tmp_path / "camera.yaml"
    out.write_text("kept\n")
    rc = main(["calibrate", str(video), "--pattern", "9x6", "--out", str(out), "--every", "1"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "found in 5 of 10 frames" in captured.out
    assert "only 5 views of the board; at least 8 are needed" in captured.err and "not written" in captured.err
    assert out.read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camera.yaml", "few.mp4"]  # no temporary file left


def test_calibrate_names_a_missing_input_and_a_bad_pattern(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "none.mp4"), "--pattern", "9x6", "--out", str(tmp_path / "c.yaml")]) == 2
    assert "none.mp4: no such video or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "x.mp4", "--pattern", "9by6", "--out", "c.yaml"])
    assert "expected COLSxROWS" in capsys.readouterr().err
    assert parse_pattern("9x6") == (9, 6)


def test_calibrate_names_a_frame_of_another_size_and_an_undecodable_image(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), np.full((480, 640), 110, np.uint8))
    cv2.imwrite(str(frames / "001.png"), np.full((240, 320), 110, np.uint8))
    out = tmp_path / "camera.yaml"
    assert main(["calibrate", str(frames), "--pattern", "9x6", "--out", str(out), "--every", "1"]) == 2
    assert "frame 1 is 320x240, the first was 640x480" in capsys.readouterr().err
    (frames / "001.png").write_bytes(b"not a png")
    assert main(["calibrate", str(frames), "--pattern", "9x6", "--out", str(out), "--every", "1"]) == 2
    assert "001.png: cannot decode this image" in capsys.readouterr().err
    assert not out.exists()


def test_refusal_reasons_by_hand():
    good = Camera(500, 500, 319.5, 239.5, 640, 480, (0.0, 0.0, 0.0, 0.0, 0.0))
    assert refusal(Calibration(good, rms=0.3, views=12, coverage=0.5)) is None
    assert "only 7 views" in refusal(Calibration(good, 0.3, 7, 0.5))
    assert "RMS reprojection error 1.500 px" in refusal(Calibration(good, 1.5, 12, 0.5))
    assert "cover 10% of the image" in refusal(Calibration(good, 0.3, 12, 0.1))
    # cx 420: |420 - 319.5| / 640 = 16% of the width from the centre
    off = Camera(500, 500, 420.0, 239.5, 640, 480, (0.0,) * 5)
    assert "16% of the image size from the centre" in refusal(Calibration(off, 0.3, 12, 0.5))


def test_coverage_and_spread_by_hand():
    # corners spanning pixels 0..99 of a 200x200 image: 100x100 pixels filled = a quarter
    square = np.array([[0, 0], [99, 0], [99, 99], [0, 99], [50, 50]], np.float32).reshape(-1, 1, 2)
    assert coverage([square], (200, 200)) == pytest.approx(0.25)
    assert coverage([square, square + 100], (200, 200)) == pytest.approx(0.5)
    assert spread(5, 40) == [0, 1, 2, 3, 4]
    assert spread(9, 3) == [0, 4, 8]
    assert math.isclose(len(spread(100, 40)), 40)
