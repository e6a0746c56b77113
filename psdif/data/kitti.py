"""KITTI raw: split lists, images, calibration, velodyne, OXTS, timestamps, and the Eigen GT depth map.

Layout (design.md §4.1)::

    <root>/<date>/calib_{cam_to_cam,velo_to_cam,imu_to_velo}.txt
    <root>/<date>/<date>_drive_NNNN_sync/image_0{2,3}/data/%010d.{png,jpg}
    <root>/<date>/<date>_drive_NNNN_sync/velodyne_points/data/%010d.bin   float32 x, y, z, reflectance
    <root>/<date>/<date>_drive_NNNN_sync/oxts/data/%010d.txt              30 fields (oxts/dataformat.txt)
    <root>/<date>/<date>_drive_NNNN_sync/<sensor>/timestamps.txt

Split line format: ``<date>/<drive> <frame> <l|r>`` (l = image_02, r = image_03). The drive folder is a
relative path of plain names that stays inside ``data.raw_root``: no ``..``, no absolute path, no empty
component, no symbolic link out of the root (:func:`check_folder`, :func:`check_inside_root`), so that no
path built from it (the frame's image, its label PNG, its boundary mask) can leave its folder.
Every reader raises :class:`KittiError` naming the file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from psdif.data.images import open_image
from psdif.io import PathEscapeError, atomic_write_text, inside, relative_parts

SIDE_TO_CAM = {"l": 2, "r": 3}
OXTS_FIELDS = 30
OXTS_VF, OXTS_VL, OXTS_VU = 8, 9, 10  # forward / left / up speed in m/s (0-based fields)


class KittiError(RuntimeError):
    """A KITTI file is missing or malformed; the message names it."""


@dataclass(frozen=True, order=True)
class FrameRef:
    """One frame of one camera: ``folder`` = ``<date>/<date>_drive_NNNN_sync``, side ``l`` or ``r``."""

    folder: str
    frame: int
    side: str

    def __post_init__(self):
        check_folder(self.folder)  # a folder from anywhere (a list, a manifest) never leaves its root

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]

    @property
    def cam(self) -> int:
        return SIDE_TO_CAM[self.side]

    def shifted(self, offset: int) -> "FrameRef":
        return FrameRef(self.folder, self.frame + offset, self.side)

    def line(self) -> str:
        return f"{self.folder} {self.frame} {self.side}"


# ------------------------------------------------------------------------------------------ split files

FOLDER_RULE = ("the drive folder must be a relative path '<date>/<drive>' of plain names inside data.raw_root "
               "(no leading '/', no '..' or '.' component, no empty component such as '//')")


def check_folder(folder: str) -> None:
    """Refuse a drive folder that could leave the roots it is joined to (``data.raw_root`` when reading,
    data/pseudolabels, data/boundaries, data/prepared when writing): absolute, ``..``, ``.``, empty
    components, backslashes. Raises :class:`KittiError` saying what is allowed."""
    try:
        relative_parts(folder, "drive folder")
    except PathEscapeError as exc:
        raise KittiError(f"{exc}; {FOLDER_RULE}") from None


def check_inside_root(root: str | Path, folder: str, where: str = "") -> None:
    """The drive folder ``folder`` resolves inside ``root`` (a symbolic link in the copy pointing outside it
    is refused: nothing under it would be the copy psdif fingerprints). ``where``: ``list:line: 'line'``."""
    check_folder(folder)
    if not inside(Path(root) / folder, root):
        real = (Path(root) / folder).resolve()
        raise KittiError(f"{where + ': ' if where else ''}drive folder {folder!r} resolves to {real}, outside "
                         f"data.raw_root={root} ({Path(root).resolve()}) through a symbolic link; "
                         f"{FOLDER_RULE}. Move the drive into the copy (or link data.raw_root itself)")


def parse_split_line(line: str, where: str = "<string>") -> FrameRef:
    parts = line.split()
    if len(parts) != 3 or parts[2] not in SIDE_TO_CAM or not parts[1].isdigit() or "/" not in parts[0]:
        raise KittiError(f"{where}: expected '<date>/<drive> <frame> <l|r>', got {line.strip()!r}")
    try:
        relative_parts(parts[0], "drive folder")
    except PathEscapeError as exc:
        raise KittiError(f"{where}: {line.strip()!r}: {exc}; {FOLDER_RULE}") from None
    return FrameRef(parts[0], int(parts[1]), parts[2])


def read_split(path: str | Path, root: str | Path | None = None) -> list[FrameRef]:
    """Read a split list (eigen test uses 10-digit frame numbers, eigen_zhou plain ints: both parse).

    Every line's drive folder is checked (:func:`check_folder`); with ``root`` (``data.raw_root``) each
    folder must also resolve inside it (:func:`check_inside_root`). Errors name the list, line and text.
    """
    path = Path(path)
    if not path.exists():
        raise KittiError(f"{path}: split file not found")
    frames = []
    checked: set[str] = set()
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            ref = parse_split_line(line, f"{path}:{i}")
            if root is not None and ref.folder not in checked:
                check_inside_root(root, ref.folder, f"{path}:{i}: {line.strip()!r}")
                checked.add(ref.folder)
            frames.append(ref)
    return frames


def write_split(path: str | Path, frames: list[FrameRef]) -> None:
    atomic_write_text(path, "".join(f.line() + "\n" for f in frames))


# ------------------------------------------------------------------------------------------ paths

def drive_dir(root: str | Path, folder: str) -> Path:
    """``root / folder``; a folder that could leave ``root`` (``..``, absolute) raises :class:`KittiError`."""
    check_folder(folder)
    return Path(root) / folder


def image_path(root: str | Path, ref: FrameRef, ext: str = "png") -> Path:
    return drive_dir(root, ref.folder) / f"image_0{ref.cam}" / "data" / f"{ref.frame:010d}.{ext}"


def velodyne_path(root: str | Path, folder: str, frame: int) -> Path:
    return drive_dir(root, folder) / "velodyne_points" / "data" / f"{frame:010d}.bin"


def oxts_path(root: str | Path, folder: str, frame: int) -> Path:
    return drive_dir(root, folder) / "oxts" / "data" / f"{frame:010d}.txt"


def calib_dir(root: str | Path, folder: str) -> Path:
    return Path(root) / folder.split("/")[0]


def list_frames(root: str | Path, folder: str, cam: int = 2) -> list[int]:
    """Frame indices present on disk for one camera of one drive (png or jpg), sorted."""
    data = drive_dir(root, folder) / f"image_0{cam}" / "data"
    if not data.is_dir():
        raise KittiError(f"{data}: image folder not found")
    return sorted({int(p.stem) for p in data.iterdir() if p.suffix in (".png", ".jpg") and p.stem.isdigit()})


# ------------------------------------------------------------------------------------------ readers

class CalibFile(dict):
    """``key -> float64 array`` of a calibration file, remembering where each entry came from.

    ``lines``: key -> line number; ``text``: key -> value text of the entries that are not all numbers
    (``calib_time: 09-Jan-2012 13:57:47``; or a damaged value), which are left out of the mapping.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.lines: dict[str, int] = {}
        self.text: dict[str, str] = {}


def read_calib_file(path: str | Path) -> CalibFile:
    """``key: numbers`` lines as float64 arrays; entries that are not all numbers (``calib_time``) are left
    out of the mapping but kept in ``.text`` so that :func:`calib_entry` can say what is wrong with them."""
    path = Path(path)
    if not path.exists():
        raise KittiError(f"{path}: calibration file not found")
    out = CalibFile(path)
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise KittiError(f"{path}:{i}: expected 'key: values', got {line.strip()!r}")
        key, value = line.split(":", 1)
        key = key.strip()
        out.lines[key] = i
        try:
            out[key] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            out.text[key] = value.strip()  # e.g. calib_time: 09-Jan-2012 13:57:47
    return out


def calib_entry(calib: dict, key: str, size: int, path) -> np.ndarray:
    """Entry ``key`` of a :func:`read_calib_file` mapping: ``size`` finite numbers, else :class:`KittiError`
    naming the file, the line and the entry, and saying what is wrong (missing, not numbers, count, nan)."""
    line = getattr(calib, "lines", {}).get(key)
    where = f"{path}:{line}" if line else f"{path}"
    fix = "fix the file or extract it again from the calibration archive"
    text = getattr(calib, "text", {}).get(key)
    if text is not None:
        bad = next((v for v in text.split() if not _is_float(v)), text)
        raise KittiError(f"{where}: calibration entry {key!r} has a value that is not a number "
                         f"({bad!r} in {text[:80]!r}); {fix}")
    if key not in calib:
        raise KittiError(f"{path}: missing calibration entry {key!r}; {fix}")
    values = calib[key]
    if values.size != size:
        raise KittiError(f"{where}: calibration entry {key!r} has {values.size} values, expected {size}; {fix}")
    if not np.isfinite(values).all():
        i = int(np.flatnonzero(~np.isfinite(values))[0])
        raise KittiError(f"{where}: calibration entry {key!r} is not finite ({values[i]} at position {i + 1} "
                         f"of {size}); {fix}")
    return values


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True



def _rigid_transform(path: Path) -> np.ndarray:
    """``[4, 4]`` from a calibration file's ``R`` (9 values) and ``T`` (3 values)."""
    calib = read_calib_file(path)
    m = np.eye(4)
    m[:3, :3] = calib_entry(calib, "R", 9, path).reshape(3, 3)
    m[:3, 3] = calib_entry(calib, "T", 3, path)
    return m


def velo_to_cam_matrix(calib_dir_: str | Path) -> np.ndarray:
    """``[4, 4]`` rigid transform velodyne -> cam0 (unrectified) from ``calib_velo_to_cam.txt``."""
    return _rigid_transform(Path(calib_dir_) / "calib_velo_to_cam.txt")


def imu_to_velo_matrix(calib_dir_: str | Path) -> np.ndarray:
    """``[4, 4]`` rigid transform IMU -> velodyne from ``calib_imu_to_velo.txt``."""
    return _rigid_transform(Path(calib_dir_) / "calib_imu_to_velo.txt")


@dataclass(frozen=True)
class CameraCalib:
    """Rectified camera ``cam``: ``P_rect [3, 4]``, ``R_rect_00 [4, 4]``, image size ``(H, W)``."""

    P_rect: np.ndarray
    R_rect_00: np.ndarray
    image_size: tuple[int, int]

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` intrinsics in pixels of the rectified image."""
        return self.P_rect[:, :3].copy()


def read_camera_calib(calib_dir_: str | Path, cam: int = 2) -> CameraCalib:
    path = Path(calib_dir_) / "calib_cam_to_cam.txt"
    calib = read_calib_file(path)
    P = calib_entry(calib, f"P_rect_0{cam}", 12, path).reshape(3, 4)
    R = np.eye(4)
    R[:3, :3] = calib_entry(calib, "R_rect_00", 9, path).reshape(3, 3)
    s = calib_entry(calib, f"S_rect_0{cam}", 2, path)
    return CameraCalib(P_rect=P, R_rect_00=R, image_size=(int(s[1]), int(s[0])))


VELODYNE_POINT_BYTES = 16  # float32 x, y, z, reflectance


def read_velodyne(path: str | Path) -> np.ndarray:
    """Velodyne scan ``float32 [N, 4]`` (x, y, z, reflectance); N >= 1.

    The file size must be a whole number of 16-byte points: one cut anywhere (even at a multiple of 4
    bytes, which ``np.fromfile`` would read without complaint) is reported as truncated, an empty file as
    empty, both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise KittiError(f"{path}: velodyne scan not found")
    size = path.stat().st_size
    redo = "extract it again from its drive's archive (or re-run the download stage)"
    if size == 0:
        raise KittiError(f"{path}: empty file (0 bytes), not a velodyne scan; {redo}")
    if size % VELODYNE_POINT_BYTES:
        raise KittiError(f"{path}: {size} bytes is not a whole number of {VELODYNE_POINT_BYTES}-byte "
                         f"(x, y, z, r) float32 points ({size % VELODYNE_POINT_BYTES} bytes of a partial point "
                         f"at the end); the file is truncated; {redo}")
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def read_oxts(path: str | Path) -> np.ndarray:
    """One OXTS packet: ``float64 [30]`` (see ``oxts/dataformat.txt``)."""
    path = Path(path)
    if not path.exists():
        raise KittiError(f"{path}: OXTS file not found")
    try:
        values = np.array([float(v) for v in path.read_text().split()], dtype=np.float64)
    except ValueError as exc:
        raise KittiError(f"{path}: non-numeric OXTS field ({exc})") from None
    if values.size != OXTS_FIELDS:
        raise KittiError(f"{path}: {values.size} OXTS fields, expected {OXTS_FIELDS}")
    return values


def oxts_speed(packet: np.ndarray) -> float:
    """Ground speed in m/s from the forward and leftward velocities (fields 8, 9)."""
    return float(np.hypot(packet[OXTS_VF], packet[OXTS_VL]))


def read_timestamps(path: str | Path) -> np.ndarray:
    """KITTI ``timestamps.txt`` -> seconds since the Unix epoch (UTC), ``float64 [N]``; ns digits kept."""
    path = Path(path)
    if not path.exists():
        raise KittiError(f"{path}: timestamps file not found")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            stamp, _, frac = line.partition(".")
            dt = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
            out.append(dt.timestamp() + (float("0." + frac) if frac else 0.0))
        except ValueError:
            raise KittiError(f"{path}:{i}: malformed timestamp {line!r}") from None
    return np.asarray(out, dtype=np.float64)


# ------------------------------------------------------------------------------------------ GT depth

def generate_depth_map(calib_dir: str | Path, velo_path: str | Path, cam: int = 2,
                       vel_depth: bool = False) -> np.ndarray:
    """Project a velodyne scan into rectified camera ``cam``: ``float32 [H, W]`` metres, 0 = no point.

    design.md §4.3, reproduced bit for bit: ``P = P_rect_0cam · R_rect_00 · [R|T]_velo->cam``; points with
    x_velo >= 0; pixel ``round(·) - 1``; later points overwrite earlier ones; then points grouped by the
    linear index ``v·(W-1) + u - 1`` (the original code's off-by-one, kept on purpose) write their group's
    minimum at the pixel of the group's first point; negatives -> 0. ``vel_depth`` stores x_velo instead
    of the projected depth (the Eigen GT export uses it).
    """
    calib_dir = Path(calib_dir)
    cc = read_camera_calib(calib_dir, cam)
    height, width = cc.image_size
    P_velo2im = cc.P_rect @ cc.R_rect_00 @ velo_to_cam_matrix(calib_dir)

    velo = read_velodyne(velo_path).copy()
    velo[:, 3] = 1.0
    velo = velo[velo[:, 0] >= 0]

    pts = (P_velo2im @ velo.T).T  # float64 [N, 3]
    pts[:, :2] = pts[:, :2] / pts[:, 2:3]
    if vel_depth:
        pts[:, 2] = velo[:, 0]
    pts[:, 0] = np.round(pts[:, 0]) - 1
    pts[:, 1] = np.round(pts[:, 1]) - 1
    keep = (pts[:, 0] >= 0) & (pts[:, 1] >= 0) & (pts[:, 0] < width) & (pts[:, 1] < height)
    pts = pts[keep]
    u = pts[:, 0].astype(np.int64)
    v = pts[:, 1].astype(np.int64)

    depth = np.zeros((height, width), dtype=np.float64)
    if not len(pts):  # no point in front of the camera falls inside the image
        return depth.astype(np.float32)
    depth[v, u] = pts[:, 2]  # a later point overwrites an earlier one

    # groups of the (off-by-one) linear index: min of the group at the group's first point
    lin = v * (width - 1) + u - 1
    order = np.argsort(lin, kind="stable")  # stable: the first of each group is its first in file order
    lin_sorted = lin[order]
    starts = np.flatnonzero(np.r_[True, lin_sorted[1:] != lin_sorted[:-1]])
    counts = np.diff(np.r_[starts, lin_sorted.size])
    group_min = np.minimum.reduceat(pts[order, 2], starts) if starts.size else np.zeros(0)
    first = order[starts]
    dup = counts > 1
    depth[v[first[dup]], u[first[dup]]] = group_min[dup]

    depth[depth < 0] = 0
    return depth.astype(np.float32)


def read_depth_png(path: str | Path) -> np.ndarray:
    """KITTI depth GT / dense depth PNG (uint16, value/256 m; 0 = invalid) -> ``float32 [H, W]`` metres."""
    with open_image(path, "depth PNG", "use the uint16 PNGs of KITTI's depth annotations") as im:
        arr = np.asarray(im)
    if arr.dtype != np.uint16 and arr.dtype != np.int32:
        raise KittiError(f"{path}: depth PNG must be 16-bit, got {arr.dtype}")
    return arr.astype(np.float32) / 256.0


# ------------------------------------------------------------------------------------------ improved GT

ANNOTATED_SPLITS = ("train", "val")  # data_depth_annotated.zip unpacks as <train|val>/<drive>/proj_depth/...


def improved_depth_relpath(ref: FrameRef) -> Path:
    """``<drive>/proj_depth/groundtruth/image_0{2,3}/%010d.png``: where KITTI's annotated depth of ``ref`` lies
    below a drive's parent folder (design.md §4.3, improved ground truth)."""
    drive = ref.folder.split("/")[-1]
    return Path(drive) / "proj_depth" / "groundtruth" / f"image_0{ref.cam}" / f"{ref.frame:010d}.png"


def improved_depth_candidates(raw_root: str | Path, annotated_root: str | Path | None, ref: FrameRef) -> list[Path]:
    """Where the annotated depth PNG of ``ref`` may be, in the order looked at.

    ``annotated_root`` null: in place in the raw copy, ``<raw_root>/<date>/<drive>/proj_depth/...``
    (Monodepth2's layout). Otherwise ``<annotated_root>/<drive>/proj_depth/...`` or
    ``<annotated_root>/{train,val}/<drive>/proj_depth/...`` (KITTI's data_depth_annotated.zip unpacked).
    """
    rel = improved_depth_relpath(ref)
    if annotated_root is None:
        return [drive_dir(raw_root, ref.folder).parent / rel]
    root = Path(annotated_root)
    return [root / rel, *(root / split / rel for split in ANNOTATED_SPLITS)]


def improved_depth_path(raw_root: str | Path, annotated_root: str | Path | None, ref: FrameRef) -> Path | None:
    """The first of :func:`improved_depth_candidates` that is a file (None: ``ref`` has no annotation on disk)."""
    return next((p for p in improved_depth_candidates(raw_root, annotated_root, ref) if p.is_file()), None)


def read_improved_depth(png_path: str | Path) -> np.ndarray:
    """KITTI's annotated depth (Uhrig et al. 2017; the eigen_benchmark GT): a 16-bit greyscale PNG,
    value / 256 = metres, 0 = no depth -> ``float32 [H, W]`` metres.

    A file that is missing, unreadable, truncated, not a PNG or not 16-bit greyscale raises
    :class:`KittiError` naming it (an 8-bit PNG would silently give depths 256 times too small).
    """
    from psdif.data.images import ImageError, _png_bit_depth

    path = Path(png_path)
    redo = "extract it again from data_depth_annotated.zip (KITTI depth completion page)"
    if not path.is_file():
        raise KittiError(f"{path}: annotated depth PNG not found; {redo}")
    bits = _png_bit_depth(path)
    if bits != 16:
        what = "not a PNG" if bits is None else f"{bits}-bit PNG, not 16-bit"
        raise KittiError(f"{path}: {what}; annotated depth must be a 16-bit greyscale PNG (uint16, value/256 m); "
                         f"{redo}")
    try:
        with open_image(path, "annotated depth PNG", redo) as im:
            mode, arr = im.mode, np.asarray(im)
    except ImageError as exc:
        raise KittiError(str(exc)) from None
    if arr.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        raise KittiError(f"{path}: 16-bit PNG of mode {mode} (shape {arr.shape}), not greyscale; annotated depth "
                         f"is one uint16 channel; {redo}")
    return arr.astype(np.float32) / np.float32(256.0)
