"""``psdif calibrate``: a camera's intrinsics from a video (or a folder of images) of a checkerboard.

    psdif calibrate checkerboard.mp4 --pattern 9x6 --square 0.025 --out camera.yaml [--every N] [--max-views 40]

Every N-th frame is searched for the board's inner corners (OpenCV ``findChessboardCorners``, refined by
``cornerSubPix``); at most ``--max-views`` of the frames where the board was found, evenly spread over the
video, go to ``calibrateCamera`` (k1, k2, p1, p2, k3; no skew). The command prints the RMS reprojection
error and the number of views, and writes an OpenCV FileStorage YAML (``camera_matrix``,
``distortion_coefficients``, ``image_width``, ``image_height``) that :func:`psdif.camera.read_camera` reads,
atomically (a temporary file, then a rename).

It refuses, with exit status 2 and the reason, a calibration it cannot trust (nothing is written):
fewer than ``--min-views`` views (8), an RMS error above ``--max-rms`` px (1.0), boards covering less
than ``--min-coverage`` of the image (0.25: corners near the edges are what pins the distortion down), or
a principal point farther than ``--max-centre-offset`` (0.15) of the image size from its centre.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from psdif.camera import Camera, CameraError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
MIN_VIEWS = 8
MAX_RMS = 1.0            # px
MIN_COVERAGE = 0.25      # fraction of the image inside the union of the boards' outlines
MAX_CENTRE_OFFSET = 0.15  # |cx - (W - 1) / 2| / W and |cy - (H - 1) / 2| / H


class CalibrationError(Exception):
    """A calibration ``psdif calibrate`` refuses (exit status 2); the message says why."""


@dataclass
class Views:
    """Board corners found in a video: ``corners[i]`` ``[N, 1, 2]`` float32 pixels of frame ``frames[i]``."""

    corners: list[np.ndarray]
    frames: list[int]
    image_size: tuple[int, int]  # (width, height)
    searched: int  # frames searched


@dataclass
class Calibration:
    camera: Camera
    rms: float
    views: int
    coverage: float


def parse_pattern(text: str) -> tuple[int, int]:
    """``"9x6"`` -> (9, 6): inner corners per row and per column."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 2 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected COLSxROWS inner corners, e.g. 9x6")
    return int(parts[0]), int(parts[1])


# ------------------------------------------------------------------------------------------ frames

def iter_frames(path: str | Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, grey uint8 [H, W])`` of every ``every``-th frame of a video or of a folder's sorted images."""
    import cv2

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise CalibrationError(f"{path}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
        for i, file in enumerate(files[::every]):
            grey = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise CalibrationError(f"{file}: cannot decode this image")
            yield i * every, grey
        return
    if not path.is_file():
        raise CalibrationError(f"{path}: no such video or folder")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CalibrationError(f"{path}: cannot open the video (missing codec or not a video file)")
        index = 0
        while cap.grab():
            if index % every == 0:
                ok, frame = cap.retrieve()
                if not ok:
                    raise CalibrationError(f"{path}: frame {index} does not decode")
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            index += 1
    finally:
        cap.release()


def find_corners(grey: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """The board's inner corners ``[N, 1, 2]`` float32, refined to sub-pixel, or None when not found."""
    import cv2

    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(grey, pattern, flags=flags)
    if not found:
        return None
    grid = corners.reshape(pattern[1], pattern[0], 2)
    spacing = min(np.linalg.norm(np.diff(grid, axis=0), axis=2).min(),
                  np.linalg.norm(np.diff(grid, axis=1), axis=2).min())
    half = int(np.clip(spacing * 0.4, 2, 11))  # the search window stays inside one square
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    return cv2.cornerSubPix(grey, corners, (half, half), (-1, -1), criteria)


def collect_views(path: str | Path, pattern: tuple[int, int], every: int) -> Views:
    """Corners of every sampled frame where the board is found; all frames must share one size."""
    views = Views([], [], (0, 0), 0)
    for index, grey in iter_frames(path, every):
        size = (grey.shape[1], grey.shape[0])
        if views.searched and size != views.image_size:
            raise CalibrationError(f"{path}: frame {index} is {size[0]}x{size[1]}, the first was "
                                   f"{views.image_size[0]}x{views.image_size[1]}; one camera, one size")
        views.image_size = size
        views.searched += 1
        corners = find_corners(grey, pattern)
        if corners is not None:
            views.corners.append(corners)
            views.frames.append(index)
    if not views.searched:
        raise CalibrationError(f"{path}: no frame decodes")
    return views


def spread(n: int, keep: int) -> list[int]:
    """``min(n, keep)`` indices of ``range(n)`` spread evenly, first and last included."""
    if n <= keep:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, keep)})


# ------------------------------------------------------------------------------------------ calibration

def board_points(pattern: tuple[int, int], square: float) -> np.ndarray:
    """``[N, 3]`` float32 inner corners on the board plane (z = 0), row by row as OpenCV finds them."""
    cols, rows = pattern
    xy = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2) * square
    return np.concatenate([xy, np.zeros((len(xy), 1))], axis=1).astype(np.float32)


def coverage(corners: list[np.ndarray], image_size: tuple[int, int]) -> float:
    """Fraction of the image inside at least one board outline (the convex hull of its corners)."""
    import cv2

    width, height = image_size
    mask = np.zeros((height, width), np.uint8)
    for c in corners:
        hull = cv2.convexHull(c.reshape(-1, 2).astype(np.float32))
        cv2.fillConvexPoly(mask, np.round(hull.reshape(-1, 2)).astype(np.int32), 1)
    return float(mask.mean())


def calibrate(views: Views, pattern: tuple[int, int], square: float, source: str) -> Calibration:
    """``calibrateCamera`` on ``views`` (no check of the result: see :func:`refusal`)."""
    import cv2

    if len(views.corners) < 3:
        raise CalibrationError(f"{source}: the board was found in {len(views.corners)} of {views.searched} "
                               f"frames searched; at least {MIN_VIEWS} views are needed")
    objects = [board_points(pattern, square)] * len(views.corners)
    rms, K, dist, _, _ = cv2.calibrateCamera(objects, views.corners, views.image_size, None, None)
    width, height = views.image_size
    try:
        camera = Camera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height,
                        tuple(float(v) for v in dist.ravel()), source=source)
    except CameraError as exc:
        raise CalibrationError(f"calibration failed: {exc}") from None
    return Calibration(camera, float(rms), len(views.corners), coverage(views.corners, views.image_size))


def refusal(cal: Calibration, min_views: int = MIN_VIEWS, max_rms: float = MAX_RMS,
            min_coverage: float = MIN_COVERAGE, max_offset: float = MAX_CENTRE_OFFSET) -> str | None:
    """Why ``cal`` cannot be trusted (the first reason found), or None."""
    cam = cal.camera
    if cal.views < min_views:
        return f"only {cal.views} views of the board; at least {min_views} are needed (film it from more angles)"
    if cal.rms > max_rms:
        return (f"RMS reprojection error {cal.rms:.3f} px is above {max_rms:g} px (blurred frames, a wrong "
                "--pattern, or a board that is not flat)")
    if cal.coverage < min_coverage:
        return (f"the boards cover {cal.coverage:.0%} of the image, less than {min_coverage:.0%}: move the board "
                "into the corners and edges of the view")
    dx = abs(cam.cx - (cam.width - 1) / 2) / cam.width
    dy = abs(cam.cy - (cam.height - 1) / 2) / cam.height
    if max(dx, dy) > max_offset:
        return (f"principal point ({cam.cx:.1f}, {cam.cy:.1f}) is {max(dx, dy):.0%} of the image size from the "
                f"centre (more than {max_offset:.0%}): too few tilted views to pin it down")
    return None


def camera_yaml(cal: Calibration, pattern: tuple[int, int], square: float) -> str:
    """OpenCV FileStorage YAML text of ``cal`` (the keys OpenCV's calibration sample writes)."""
    import cv2

    fs = cv2.FileStorage("camera.yaml", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY
                         | cv2.FILE_STORAGE_FORMAT_YAML)
    cam = cal.camera
    fs.write("image_width", cam.width)
    fs.write("image_height", cam.height)
    fs.write("board_width", pattern[0])
    fs.write("board_height", pattern[1])
    fs.write("square_size", square)
    fs.write("nr_of_frames", cal.views)
    fs.write("camera_matrix", cam.K)
    fs.write("distortion_coefficients", np.array(cam.distortion, np.float64).reshape(1, -1))
    fs.write("avg_reprojection_error", cal.rms)
    fs.write("coverage", cal.coverage)
    fs.write("source", cam.source)
    return fs.releaseAndGetString()


# ------------------------------------------------------------------------------------------ command

def cmd_calibrate(args) -> int:
    from psdif.io import DiskFullError, atomic_write_text

    try:
        _check_args(args)
        views = collect_views(args.input, args.pattern, args.every)
        found = len(views.corners)
        keep = spread(found, args.max_views)
        views.corners = [views.corners[i] for i in keep]
        views.frames = [views.frames[i] for i in keep]
        print(f"{args.input}: board {args.pattern[0]}x{args.pattern[1]} found in {found} of {views.searched} "
              f"frames searched (every {args.every}); calibrating with {len(keep)}")
        cal = calibrate(views, args.pattern, args.square, str(args.input))
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cam = cal.camera
    print(f"RMS reprojection error {cal.rms:.3f} px over {cal.views} views, coverage {cal.coverage:.0%}: "
          f"fx {cam.fx:.2f}, fy {cam.fy:.2f}, cx {cam.cx:.2f}, cy {cam.cy:.2f} at {cam.width}x{cam.height}, "
          f"distortion {', '.join(f'{d:.4f}' for d in cam.distortion)}")
    why = refusal(cal, args.min_views, args.max_rms, args.min_coverage, args.max_centre_offset)
    if why:
        print(f"error: refusing this calibration, {why}; {args.out} not written", file=sys.stderr)
        return 2
    try:
        atomic_write_text(args.out, camera_yaml(cal, args.pattern, args.square))
    except (DiskFullError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def _check_args(args) -> None:
    out = Path(args.out)
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise CalibrationError(f"--out {out}: give a .yaml file name (OpenCV FileStorage YAML)")
    if out.is_dir():
        raise CalibrationError(f"--out {out} is a folder; give a file name")
    if args.every < 1 or args.max_views < 1 or args.square <= 0:
        raise CalibrationError("--every and --max-views must be at least 1, --square positive")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``psdif calibrate`` on the ``psdif`` command's subparsers."""
    p = sub.add_parser("calibrate", help="camera intrinsics from a checkerboard video or folder of images",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="a video file or a folder of images of a printed checkerboard")
    p.add_argument("--pattern", type=parse_pattern, required=True, metavar="COLSxROWS",
                   help="inner corners per row and column, e.g. 9x6 for a board of 10x7 squares")
    p.add_argument("--square", type=float, default=1.0, metavar="METRES",
                   help="side of one square (scales the board poses only; the intrinsics do not depend on it)")
    p.add_argument("--out", required=True, help="the camera file to write (.yaml)")
    p.add_argument("--every", type=int, default=10, metavar="N", help="search every N-th frame (default 10)")
    p.add_argument("--max-views", type=int, default=40, help="calibrate with at most this many views, spread "
                                                              "over the video (default 40)")
    p.add_argument("--min-views", type=int, default=MIN_VIEWS, help=f"refuse with fewer (default {MIN_VIEWS})")
    p.add_argument("--max-rms", type=float, default=MAX_RMS, metavar="PX",
                   help=f"refuse a larger RMS reprojection error (default {MAX_RMS:g} px)")
    p.add_argument("--min-coverage", type=float, default=MIN_COVERAGE, metavar="FRACTION",
                   help=f"refuse when the boards cover less of the image (default {MIN_COVERAGE:g})")
    p.add_argument("--max-centre-offset", type=float, default=MAX_CENTRE_OFFSET, metavar="FRACTION",
                   help="refuse a principal point farther from the centre, as a fraction of the image size "
                        f"(default {MAX_CENTRE_OFFSET:g})")
    p.set_defaults(func=cmd_calibrate)
    return p
