"""Video ingest (issue 21, your own videos): a folder of clips -> drives in the KITTI raw layout (design.md §4.8).

    ingest_clips(clips_dir, out_root, camera, fps, size=None) -> IngestReport
    split_by_clip(report.drives, val_fraction, test_fraction, seed) -> {"train", "val", "test": [FrameRef]}

A clip is a ``.mp4 .mov .mkv .avi`` file or a folder of numbered images (one folder, one clip). Each clip is
decoded in its stored orientation, sampled at ``fps`` by its timestamps, undistorted with the camera (same K
before and after), turned upright by its rotation metadata, centre-cropped to the output aspect ratio and
resized to the output size; frames equal to the previous one (up to codec noise) are dropped and a scene cut
starts a new drive. Drives are written as::

    <out_root>/<date>/calib_cam_to_cam.txt                      P_rect_02 / S_rect_02 of the written frames
    <out_root>/<date>/<date>_drive_NNNN_sync/image_02/data/%010d.png
    <out_root>/<date>/<date>_drive_NNNN_sync/video_ingest.json   what the drive was made from (resuming), and
                                                                 the decoded index of each written frame
    <out_root>/<date>/<date>_drive_NNNN_sync/proj_depth/groundtruth/image_02/%010d.png   depth GT, when given

Depth GT (optional, ``gt_dir``): ``<gt_dir>/<clip stem>/<k:010d>.png`` (16-bit, metres x 256: KITTI's annotated
depth) or ``.npy`` (float metres) for decoded frame k of the clip, at the clip's stored size; it goes through the
same undistortion, rotation, crop and resize as the frame (nearest neighbour: no depth is interpolated) and is
written in KITTI's annotated-depth format in place, where the eigen_benchmark protocol reads it.

``<date>`` is ``video`` for the drives sharing the most common intrinsics, ``video_2``, ``video_3`` ... for
drives whose written intrinsics differ (a portrait clip cropped to a landscape output): one calibration file
per date folder, as in KITTI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from psdif.camera import Camera
from psdif.data.images import resize_image, write_png
from psdif.data.kitti import FrameRef
from psdif.io import atomic_write_text, params_hash, read_json, write_json
from psdif.process import progress_bar

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
DATE = "video"
RECORD = "video_ingest.json"        # inside each drive: the clip's fingerprint and the settings it was made with
TMP = ".video_ingest_tmp"           # under out_root: drives of the clip being written, renamed when it is complete
INGEST_VERSION = 2
MIN_FRAMES = 3                      # a drive needs (t-1, t, t+1)
DUPLICATE_THRESHOLD = 0.5           # mean |grey difference| (0-255) below which a frame repeats the previous one
CUT_THRESHOLD = 30.0                # mean |grey difference| (0-255) above which a scene cut starts a new drive
SMALL_WIDTH = 64                    # the grey image both differences are measured on (area-averaged)
TIME_TOLERANCE_MS = 1.0             # a frame this early still counts for a sampling instant
FINGERPRINT_BYTES = 1 << 20         # sha256 of a clip's first MB (with its size and mtime)
GT_DIR = "proj_depth/groundtruth/image_02"  # inside a drive: KITTI's annotated-depth layout (eigen_benchmark)
ROTATIONS = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


class VideoError(RuntimeError):
    """A clip psdif cannot ingest; the message names it and says why."""


# ------------------------------------------------------------------------------------------ clips

def find_clips(clips_dir: str | Path) -> list[Path]:
    """Video files and folders of images directly under ``clips_dir``, sorted by name."""
    root = Path(clips_dir)
    if not root.is_dir():
        raise VideoError(f"{root}: clips folder not found")
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")
                  and ((p.is_file() and p.suffix.lower() in VIDEO_EXTS) or (p.is_dir() and _images(p))))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def fingerprint(clip: Path) -> dict:
    """Size, mtime and sha256 of the first MB of a video (of every image's name, size and mtime and the first
    image's first MB for a folder): what says a clip is the one a drive was made from."""
    files = [clip] if clip.is_file() else _images(clip)
    with open(files[0], "rb") as f:
        head = hashlib.sha256(f.read(FINGERPRINT_BYTES)).hexdigest()
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {"name": clip.name, "files": params_hash(stats), "head_sha256": head}


@dataclass(frozen=True)
class Probe:
    """A clip's stored frame size, its rotation metadata (degrees clockwise) and its upright size."""

    path: Path
    width: int
    height: int
    rotation: int

    @property
    def upright(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _open(path: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: cannot open it as a video (truncated, not a video, or a codec OpenCV lacks)")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)  # frames as stored: undistortion needs the sensor's orientation
    return cap


def probe_clip(path: Path) -> Probe:
    """Decode the first frame for the stored size; read the rotation (CAP_PROP_ORIENTATION_META)."""
    if path.is_dir():
        first = cv2.imread(str(_images(path)[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise VideoError(f"{_images(path)[0]}: cannot decode this image")
        return Probe(path, first.shape[1], first.shape[0], 0)
    cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok:
            raise VideoError(f"{path}: no frame decodes (truncated or damaged)")
        rotation = int(round(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)) % 360
    finally:
        cap.release()
    if rotation not in ROTATIONS:
        raise VideoError(f"{path}: rotation metadata of {rotation} degrees; only multiples of 90 are supported")
    return Probe(path, frame.shape[1], frame.shape[0], rotation)


def iter_frames(path: Path, folder_fps: float | None) -> Iterator[tuple[float, np.ndarray]]:
    """``(time in ms, BGR uint8 [H, W, 3])`` of every stored frame, in stored orientation.

    Video times are the decoder's timestamps (CAP_PROP_POS_MSEC: variable frame rates keep their timing);
    a folder's images are ``folder_fps`` apart (None: every image is a sampling instant). A video that
    decodes fewer frames than its container announces is truncated: :class:`VideoError`.
    """
    if path.is_dir():
        for i, file in enumerate(_images(path)):
            frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if frame is None:
                raise VideoError(f"{file}: cannot decode this image")
            yield (i * 1000.0 / folder_fps if folder_fps else float("nan")), frame
        return
    cap = _open(path)
    try:
        announced, rate = cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)
        n, last = 0, -math.inf
        while cap.grab():
            ok, frame = cap.retrieve()
            if not ok:
                raise VideoError(f"{path}: frame {n} does not decode (damaged)")
            t = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not t > last and rate > 0:
                t = n * 1000.0 / rate  # a backend without timestamps: the nominal rate
            last = t
            n += 1
            yield t, frame
    finally:
        cap.release()
    if announced > 0 and n < 0.95 * announced - 1:
        raise VideoError(f"{path}: decoded {n} of the {int(announced)} frames the file announces (truncated)")


def sample(frames: Iterator[tuple[float, np.ndarray]], fps: float | None) -> Iterator[tuple[float, np.ndarray]]:
    """The first frame at or after each instant t0 + k / fps (k = 0, 1, ...), t0 the first frame's time.

    A frame more than one period after the previous pick fills one instant only (no frame is repeated);
    ``fps`` None (or NaN times) keeps every frame.
    """
    period = 1000.0 / fps if fps else None
    t0, due = None, -math.inf
    for t, frame in frames:
        if period is None or math.isnan(t):
            yield t, frame
            continue
        t0 = t if t0 is None else t0
        if t - t0 >= due - TIME_TOLERANCE_MS:
            yield t, frame
            due = (math.floor((t - t0 + TIME_TOLERANCE_MS) / period) + 1) * period


# ------------------------------------------------------------------------------------------ geometry

def rotated_camera(cam: Camera, rotation: int) -> Camera:
    """The pinhole camera (no distortion) of the image turned ``rotation`` degrees clockwise.

    Clockwise 90: stored pixel (u, v) lands at (H - 1 - v, u); 180: (W - 1 - u, H - 1 - v); 270: (v, W - 1 - u).
    """
    W, H = cam.width, cam.height
    pin = dataclasses.replace(cam, distortion=None)
    if rotation == 90:
        return dataclasses.replace(pin, fx=cam.fy, fy=cam.fx, cx=H - 1 - cam.cy, cy=cam.cx, width=H, height=W)
    if rotation == 180:
        return dataclasses.replace(pin, cx=W - 1 - cam.cx, cy=H - 1 - cam.cy)
    if rotation == 270:
        return dataclasses.replace(pin, fx=cam.fy, fy=cam.fx, cx=cam.cy, cy=W - 1 - cam.cx, width=H, height=W)
    return pin


def crop_box(width: int, height: int, out_width: int, out_height: int) -> tuple[int, int, int, int]:
    """``(x0, y0, w, h)``: the centred crop of a ``width`` x ``height`` image with the output's aspect ratio."""
    if width * out_height > height * out_width:  # too wide
        w = min(width, round(height * out_width / out_height))
        return (width - w) // 2, 0, w, height
    h = min(height, round(width * out_height / out_width))
    return 0, (height - h) // 2, width, h


@dataclass(frozen=True)
class ClipGeometry:
    """How a clip's stored frames become written frames, and the camera of the written frames.

    stored: the camera of the stored frames (with distortion); rotation: degrees clockwise;
    crop: ``(x0, y0, w, h)`` of the upright frame; out: the pinhole camera of the written frame.
    """

    stored: Camera
    rotation: int
    crop: tuple[int, int, int, int]
    out: Camera

    def note(self, probe: Probe) -> str:
        """What happens to the clip's size ('' when it is written as decoded)."""
        (w, h), (W, H) = probe.upright, (self.out.width, self.out.height)
        steps = [f"turned {self.rotation} degrees (rotation metadata)"] if self.rotation else []
        if self.crop[2:] != (w, h):
            steps.append(f"centre-cropped to {self.crop[2]}x{self.crop[3]}")
        if self.crop[2:] != (W, H):
            steps.append(f"resized to {W}x{H}")
        return f"{w}x{h}: " + ", ".join(steps) if steps else ""


def clip_geometry(camera: Camera, probe: Probe, size: tuple[int, int]) -> ClipGeometry:
    """The camera describes stored frames of its aspect ratio (any resolution: :meth:`Camera.scaled`)."""
    w, h = probe.width, probe.height
    if abs(w * camera.height - h * camera.width) > max(camera.width, camera.height, w, h) / 100:
        raise VideoError(f"{probe.path}: its frames are stored as {w}x{h}, the camera's are "
                         f"{camera.width}x{camera.height}: another aspect ratio, so the camera file does not "
                         "describe this clip (calibrate this camera mode, or leave the clip out)")
    stored = camera.scaled(w, h)
    upright = rotated_camera(stored, probe.rotation)
    x0, y0, cw, ch = box = crop_box(upright.width, upright.height, *size)
    cropped = dataclasses.replace(upright, cx=upright.cx - x0, cy=upright.cy - y0, width=cw, height=ch)
    return ClipGeometry(stored, probe.rotation, box, cropped.scaled(*size))


class FrameMapper:
    """Stored BGR frame -> written RGB frame: undistort, rotate, crop, resize (:class:`ClipGeometry`).

    Undistortion keeps the same K (``initUndistortRectifyMap(K, D, None, K)``): the written pixels have the
    calibrated focal length and principal point; the corners the lens did not see stay black.
    """

    def __init__(self, geometry: ClipGeometry):
        self.geometry = geometry
        cam = geometry.stored
        self.maps = None
        if cam.distortion is not None and any(cam.distortion):
            self.maps = cv2.initUndistortRectifyMap(cam.K, np.asarray(cam.distortion), None, cam.K,
                                                    (cam.width, cam.height), cv2.CV_32FC1)

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        g = self.geometry
        if bgr.shape[:2] != (g.stored.height, g.stored.width):
            raise VideoError(f"a frame of {bgr.shape[1]}x{bgr.shape[0]} in a clip stored as "
                             f"{g.stored.width}x{g.stored.height} (the size changes inside the clip)")
        if self.maps is not None:
            bgr = cv2.remap(bgr, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if ROTATIONS[g.rotation] is not None:
            bgr = cv2.rotate(bgr, ROTATIONS[g.rotation])
        x0, y0, w, h = g.crop
        rgb = np.ascontiguousarray(bgr[y0:y0 + h, x0:x0 + w, ::-1])
        return resize_image(rgb, g.out.height, g.out.width)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """The same mapping for a depth map of a stored frame, by nearest neighbour (depths are never mixed)."""
        g = self.geometry
        if depth.shape != (g.stored.height, g.stored.width):
            raise VideoError(f"a depth map of {depth.shape[1]}x{depth.shape[0]} for frames stored as "
                             f"{g.stored.width}x{g.stored.height} (depth GT must be at the clip's stored size)")
        if self.maps is not None:
            depth = cv2.remap(depth, *self.maps, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if ROTATIONS[g.rotation] is not None:
            depth = cv2.rotate(depth, ROTATIONS[g.rotation])
        x0, y0, w, h = g.crop
        depth = np.ascontiguousarray(depth[y0:y0 + h, x0:x0 + w])
        if depth.shape != (g.out.height, g.out.width):
            depth = cv2.resize(depth, (g.out.width, g.out.height), interpolation=cv2.INTER_NEAREST_EXACT)
        return depth


# ------------------------------------------------------------------------------------------ segments

def small_grey(rgb: np.ndarray) -> np.ndarray:
    """float32 grey image at most :data:`SMALL_WIDTH` wide (area-averaged): what duplicates and cuts compare."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    if grey.shape[1] > SMALL_WIDTH:
        h = max(1, round(grey.shape[0] * SMALL_WIDTH / grey.shape[1]))
        grey = cv2.resize(grey, (SMALL_WIDTH, h), interpolation=cv2.INTER_AREA)
    return grey


def segment_frames(frames: Iterator[tuple[float, np.ndarray]], counts: Counter,
                   cut_threshold: float = CUT_THRESHOLD, duplicate_threshold: float = DUPLICATE_THRESHOLD
                   ) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(segment, time, rgb)`` of the written frames: repeats dropped, a new segment after each scene cut
    (``frames`` may carry more items after the image, ``(time, rgb, ...)``: they are passed on after it).

    With d the mean |grey difference| to the previous kept frame (:func:`small_grey`): d < duplicate_threshold
    is a repeat (``counts["repeats"]``), d > cut_threshold a cut (``counts["cuts"]``).
    """
    segment, previous = 0, None
    for t, rgb, *more in frames:
        grey = small_grey(rgb)
        if previous is not None:
            d = float(np.abs(grey - previous).mean())
            if d < duplicate_threshold:
                counts["repeats"] += 1
                continue
            if d > cut_threshold:
                counts["cuts"] += 1
                segment += 1
        previous = grey
        yield segment, t, rgb, *more


# ------------------------------------------------------------------------------------------ drives

@dataclass(frozen=True)
class Drive:
    """One written drive: ``folder`` = ``<date>/<date>_drive_NNNN_sync``, from segment ``segment`` of ``clip``;
    frames 0 .. frames - 1 of camera 02; kept: complete from an earlier run and not rewritten."""

    folder: str
    clip: str
    segment: int
    frames: int
    kept: bool = False


@dataclass
class IngestReport:
    """What :func:`ingest_clips` did: the output size and why, the drives, and every clip skipped or changed.

    skipped / resized / notes: ``(clip name, what)``; cameras: date folder -> camera of its written frames.
    """

    size: tuple[int, int]
    size_from: str
    drives: list[Drive] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resized: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    cameras: dict[str, Camera] = field(default_factory=dict)

    def lines(self) -> list[str]:
        kept = sum(d.kept for d in self.drives)
        out = [f"output size {self.size[0]}x{self.size[1]} ({self.size_from}); {len(self.drives)} drives "
               f"({kept} kept from an earlier run), {sum(d.frames for d in self.drives)} frames"]
        out += [f"resized {clip}: {what}" for clip, what in self.resized]
        out += [f"note {clip}: {what}" for clip, what in self.notes]
        out += [f"skipped {clip}: {why}" for clip, why in self.skipped]
        return out


def calib_text(cam: Camera) -> str:
    """``calib_cam_to_cam.txt`` of the written frames: cameras 00 and 02 both ``cam`` (rectified, no
    distortion: the frames are undistorted), as :func:`psdif.data.kitti.read_camera_calib` reads it."""
    fmt = lambda values: " ".join(f"{v:.12e}" for v in np.ravel(values))  # noqa: E731
    size, P = [cam.width, cam.height], np.hstack([cam.K, np.zeros((3, 1))])
    lines = ["calib_time: psdif video ingest (design.md 4.8)"]
    for c in ("00", "02"):
        lines += [f"S_{c}: {fmt(size)}", f"K_{c}: {fmt(cam.K)}", f"D_{c}: {fmt(np.zeros(5))}",
                  f"R_{c}: {fmt(np.eye(3))}", f"T_{c}: {fmt(np.zeros(3))}", f"S_rect_{c}: {fmt(size)}",
                  f"R_rect_{c}: {fmt(np.eye(3))}", f"P_rect_{c}: {fmt(P)}"]
    return "\n".join(lines) + "\n"


def _intrinsics_key(cam: Camera) -> tuple:
    return tuple(round(v, 6) for v in (cam.fx, cam.fy, cam.cx, cam.cy))


def date_folders(geometries: dict[str, ClipGeometry]) -> dict[str, str]:
    """clip name -> date folder: one per distinct written intrinsics, the most common first (``video``),
    then ``video_2`` ... (ties: the first clip in name order)."""
    keys = [_intrinsics_key(g.out) for g in geometries.values()]
    order = [k for k, _ in Counter(keys).most_common()]
    names = {k: DATE if i == 0 else f"{DATE}_{i + 1}" for i, k in enumerate(order)}
    return {clip: names[k] for clip, k in zip(geometries, keys)}


def _settings(camera: Camera, fps, folder_fps, size, cut_threshold, duplicate_threshold, gt_depth=None) -> dict:
    cam = {k: getattr(camera, k) for k in ("fx", "fy", "cx", "cy", "width", "height", "distortion")}
    return {"version": INGEST_VERSION, "camera": cam, "fps": fps, "folder_fps": folder_fps, "size": list(size),
            "cut_threshold": cut_threshold, "duplicate_threshold": duplicate_threshold,
            "gt_depth": None if gt_depth is None else str(gt_depth)}


def _gt_fingerprint(folder: Path | None) -> str | None:
    """Names, sizes and mtimes of a clip's GT files (a changed GT file rewrites the clip's drives)."""
    if folder is None or not folder.is_dir():
        return None
    return params_hash([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())])


def _drive_name(date: str, number: int) -> str:
    return f"{date}_drive_{number:04d}_sync"


def complete_drives(out_root: Path, date: str, number: int, key: str, clip: str) -> list[Drive] | None:
    """The drives of ``clip`` written by an earlier run with the same ``key`` from drive ``number`` on, or
    None when any of them is missing, incomplete or was made from something else."""
    drives, n = [], 1
    while len(drives) < n:
        folder = f"{date}/{_drive_name(date, number + len(drives))}"
        try:
            record = read_json(out_root / folder / RECORD)
        except (OSError, ValueError):
            return None
        if record.get("key") != key or record.get("segment") != len(drives):
            return None
        data = out_root / folder / "image_02" / "data"
        if len(list(data.glob("*.png"))) != record.get("frames"):
            return None
        n = record["segments"]
        drives.append(Drive(folder, clip, len(drives), record["frames"], kept=True))
    return drives


def gt_folder(gt_dir: str | Path | None, clip: Path) -> Path | None:
    """``<gt_dir>/<clip stem>`` (a folder clip: its name), or None without GT."""
    return None if gt_dir is None else Path(gt_dir) / (clip.name if clip.is_dir() else clip.stem)


def read_gt_depth(folder: Path, index: int) -> np.ndarray | None:
    """Depth (float32 metres, 0 = none) of decoded frame ``index`` from ``folder``, or None when it has none."""
    npy, png = folder / f"{index:010d}.npy", folder / f"{index:010d}.png"
    if npy.is_file():
        try:
            depth = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise VideoError(f"{npy}: not a readable .npy array ({exc})") from None
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
            raise VideoError(f"{npy}: depth must be a 2-D array of metres, got {depth.dtype} {depth.shape}")
        depth = depth.astype(np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0
        return depth
    if png.is_file():
        from psdif.data.kitti import KittiError, read_improved_depth

        try:
            return read_improved_depth(png)
        except KittiError as exc:
            raise VideoError(str(exc)) from None
    return None


def depth_png(depth: np.ndarray) -> np.ndarray:
    """float metres -> KITTI's annotated-depth encoding (uint16, metres x 256, 0 = none)."""
    return np.clip(np.round(depth * 256.0), 0, 65535).astype(np.uint16)


def _write_segments(probe: Probe, mapper: FrameMapper, tmp: Path, fps, folder_fps, cut_threshold,
                    duplicate_threshold, counts: Counter, gt: Path | None = None) -> dict[int, list[tuple]]:
    """Write every frame of the clip into ``tmp/<segment>/image_02/data`` (and its depth GT, when the clip has
    any, into ``tmp/<segment>/proj_depth/groundtruth/image_02``); returns segment -> ``(time, decoded index)``
    of each written frame."""
    written: dict[int, list[tuple]] = {}
    indexed = ((t, (i, bgr)) for i, (t, bgr) in enumerate(iter_frames(probe.path, folder_fps)))
    frames = ((t, mapper(bgr), i) for t, (i, bgr) in sample(indexed, fps))
    for seg, t, rgb, index in segment_frames(frames, counts, cut_threshold, duplicate_threshold):
        stamps = written.setdefault(seg, [])
        name = f"{len(stamps):010d}.png"
        write_png(tmp / str(seg) / "image_02" / "data" / name, rgb)
        depth = read_gt_depth(gt, index) if gt is not None else None
        if depth is not None:
            path = tmp / str(seg) / GT_DIR / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), depth_png(mapper.depth(depth))):
                raise VideoError(f"{path}: cannot write the depth PNG")
            counts["gt"] += 1
        elif gt is not None:
            counts["no_gt"] += 1
        stamps.append((t, index))
    return written


def write_clip(probe: Probe, geometry: ClipGeometry, out_root: Path, date: str, number: int, key: str,
               settings: dict, report: IngestReport) -> list[Drive]:
    """Decode, sample, map and split one clip, then move its drives into place (each a rename of a complete
    folder). Segments shorter than :data:`MIN_FRAMES` are dropped and noted; none left is a :class:`VideoError`."""
    name, tmp = probe.path.name, out_root / TMP / probe.path.name
    shutil.rmtree(tmp, ignore_errors=True)
    counts: Counter = Counter()
    try:
        gt = gt_folder(settings["gt_depth"], probe.path)
        if gt is not None and not gt.is_dir():
            report.notes.append((name, f"no depth GT ({gt} is not a folder)"))
            gt = None
        times = _write_segments(probe, FrameMapper(geometry), tmp, settings["fps"], settings["folder_fps"],
                                settings["cut_threshold"], settings["duplicate_threshold"], counts, gt)
        if counts["no_gt"]:
            report.notes.append((name, f"{counts['no_gt']} of {counts['gt'] + counts['no_gt']} written frames have "
                                       f"no depth GT in {gt}"))
        kept = [s for s in sorted(times) if len(times[s]) >= MIN_FRAMES]
        if counts["repeats"]:
            report.notes.append((name, f"{counts['repeats']} repeated frames dropped"))
        if short := [len(times[s]) for s in sorted(times) if len(times[s]) < MIN_FRAMES]:
            report.notes.append((name, f"{counts['cuts']} scene cuts; segments of {short} frames dropped "
                                       f"(a drive needs at least {MIN_FRAMES})"))
        if not kept:
            total = sum(map(len, times.values()))
            raise VideoError(f"{probe.path}: {total} frames after sampling at {settings['fps']} fps "
                             f"(in segments of {[len(times[s]) for s in sorted(times)]}); a drive needs at least "
                             f"{MIN_FRAMES} consecutive frames (t-1, t, t+1)")
        return [_place(tmp / str(s), out_root, date, number + j, j, len(kept), times[s], key, settings, name)
                for j, s in enumerate(kept)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _place(src: Path, out_root: Path, date: str, number: int, segment: int, segments: int, times: list[tuple],
           key: str, settings: dict, clip: str) -> Drive:
    folder = f"{date}/{_drive_name(date, number)}"
    record = {"key": key, "clip": clip, "segment": segment, "segments": segments, "frames": len(times),
              "times_ms": [None if math.isnan(t) else round(t, 3) for t, _ in times],
              "source_frames": [i for _, i in times], **settings}
    write_json(src / RECORD, record)
    target = out_root / folder
    if target.exists():
        shutil.rmtree(target)  # an earlier run's drive made from another clip or with other settings
    target.parent.mkdir(parents=True, exist_ok=True)
    src.rename(target)
    return Drive(folder, clip, segment, len(times))


def _probe_all(clips: list[Path], camera: Camera, size, report: IngestReport):
    probes: dict[str, Probe] = {}
    for clip in clips:
        try:
            probes[clip.name] = probe_clip(clip)
        except VideoError as exc:
            report.skipped.append((clip.name, str(exc)))
    if size is None and probes:
        size = Counter(p.upright for p in probes.values()).most_common(1)[0][0]
        report.size, report.size_from = size, "the most common clip size"
    geometries: dict[str, ClipGeometry] = {}
    for name, probe in probes.items():
        try:
            geometries[name] = clip_geometry(camera, probe, size)
        except VideoError as exc:
            report.skipped.append((name, str(exc)))
            continue
        if note := geometries[name].note(probe):
            report.resized.append((name, note))
    return probes, geometries


def ingest_clips(clips_dir: str | Path, out_root: str | Path, camera: Camera, fps: float | None,
                 size: tuple[int, int] | None = None, folder_fps: float | None = None,
                 cut_threshold: float = CUT_THRESHOLD, duplicate_threshold: float = DUPLICATE_THRESHOLD,
                 progress: bool = True, gt_dir: str | Path | None = None) -> IngestReport:
    """Turn every clip of ``clips_dir`` into drives under ``out_root`` (module docstring; design.md §4.8).

    camera: the camera of the stored frames (any resolution of its aspect ratio); fps: sampling rate (None:
    every frame); size: ``(width, height)`` written (None: the most common upright clip size); folder_fps: the
    frame rate of image folders (None: every image); gt_dir: depth GT (module docstring). A clip that cannot be
    ingested is skipped with its reason
    in the report; a clip whose drives are complete from an earlier run with the same settings is kept.
    """
    out_root = Path(out_root)
    report = IngestReport(tuple(size) if size else (0, 0), "the size parameter")
    clips = find_clips(clips_dir)
    probes, geometries = _probe_all(clips, camera, tuple(size) if size else None, report)
    dates = date_folders(geometries)
    for name, date in dates.items():
        report.cameras.setdefault(date, dataclasses.replace(geometries[name].out, source=f"{out_root}/{date}"))
    for date, cam in report.cameras.items():
        path = out_root / date / "calib_cam_to_cam.txt"
        if not path.is_file() or path.read_text() != calib_text(cam):
            atomic_write_text(path, calib_text(cam))
    shutil.rmtree(out_root / TMP, ignore_errors=True)  # an interrupted run's partial drives
    numbers = Counter()
    for name in progress_bar(list(geometries), desc="ingest", unit="clip", disable=not progress):
        date, number = dates[name], numbers[dates[name]] + 1
        settings = _settings(camera, fps, folder_fps, report.size, cut_threshold, duplicate_threshold, gt_dir)
        key = params_hash({**settings, "clip": fingerprint(probes[name].path), "date": date, "number": number,
                           "gt": _gt_fingerprint(gt_folder(gt_dir, probes[name].path))})
        drives = complete_drives(out_root, date, number, key, name)
        if drives is None:
            try:
                drives = write_clip(probes[name], geometries[name], out_root, date, number, key, settings, report)
            except VideoError as exc:
                report.skipped.append((name, str(exc)))
                continue
        report.drives += drives
        numbers[date] += len(drives)
    shutil.rmtree(out_root / TMP, ignore_errors=True)
    return report


# ------------------------------------------------------------------------------------------ splits

LISTS_RECORD = ".video_lists.json"  # in the splits folder: MD5 of each list the ingest wrote there


def write_lists(splits_dir: str | Path, texts: dict[str, str]) -> None:
    """Write the lists by clip (``{path relative to splits_dir: text}``) and their record. A list already there
    that the ingest did not write (your own, or edited by hand) is refused, never overwritten."""
    splits_dir = Path(splits_dir)
    try:
        record = read_json(splits_dir / LISTS_RECORD)
    except (OSError, ValueError):
        record = {}
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    for rel, text in texts.items():
        path = splits_dir / rel
        if path.is_file() and md5(path.read_text()) not in (record.get(rel), md5(text)):
            raise VideoError(f"{path}: a split list the video ingest did not write (your own, or edited by hand); "
                             "it is not overwritten. Point data.train_split / data.test_split at another split name "
                             f"for the lists by clip, or delete {path} to let the ingest write it")
    for rel, text in texts.items():
        atomic_write_text(splits_dir / rel, text)
    write_json(splits_dir / LISTS_RECORD, {**record, **{rel: md5(text) for rel, text in texts.items()}})

def split_by_clip(drives: list[Drive], val_fraction: float, test_fraction: float, seed: int,
                  test_clips: list[str] | None = None) -> dict[str, list[FrameRef]]:
    """Train / val / test lists (KITTI split lines, camera 02 = ``l``) with every clip in one list only.

    The clips are shuffled with ``seed``; ``test_clips`` (names) are the test clips when given, else the first
    round(test_fraction n); the next round(val_fraction n) of the others go to val, the rest to train. Train and
    val list the frames with both neighbours (1 .. frames - 2), test every frame.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction = {val_fraction}, test_fraction = {test_fraction}: each in [0, 1) "
                         "and their sum below 1 (some clips must train)")
    clips = sorted({d.clip for d in drives})
    order = [clips[i] for i in np.random.default_rng(seed).permutation(len(clips))]
    if test_clips:
        if missing := sorted(set(test_clips) - set(clips)):
            raise ValueError(f"test clips {missing} were not ingested (clips: {', '.join(clips)})")
        test = [c for c in order if c in set(test_clips)]
    else:
        test = order[:round(test_fraction * len(clips))]
    rest = [c for c in order if c not in set(test)]
    if not rest:
        raise ValueError(f"every clip ({', '.join(clips)}) is a test clip: none is left to train on")
    n_val = min(round(val_fraction * len(clips)), len(rest) - 1)
    role = {c: "test" for c in test} | {c: "val" for c in rest[:n_val]}
    lists: dict[str, list[FrameRef]] = {"train": [], "val": [], "test": []}
    for d in sorted(drives, key=lambda d: d.folder):
        split = role.get(d.clip, "train")
        frames = range(d.frames) if split == "test" else range(1, d.frames - 1)
        lists[split] += [FrameRef(d.folder, i, "l") for i in frames]
    return lists
