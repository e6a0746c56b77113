"""A camera's intrinsics, read from the files people have (issue 21: training on your own videos).

    read_camera(path_or_mapping) -> Camera

Formats (:func:`read_camera` tells them apart by their content, not by their name):

- OpenCV FileStorage YAML (``%YAML:1.0``, ``!!opencv-matrix``) or XML, as ``calibrateCamera`` users and
  ``psdif calibrate`` write it: ``camera_matrix``, ``distortion_coefficients`` (optional),
  ``image_width``, ``image_height``;
- ROS ``camera_info`` YAML: ``image_width``, ``image_height``, ``camera_matrix: {rows, cols, data}``,
  ``distortion_model`` (``plumb_bob`` or ``rational_polynomial``), ``distortion_coefficients: {data}``;
- KITTI ``calib_cam_to_cam.txt``: rectified camera ``kitti_camera`` (02 by default): ``P_rect_02``'s
  3x3 and the size ``S_rect_02``, no distortion (the images are rectified);
- a mapping (or a YAML file of one) ``{fx, fy, cx, cy, width, height[, distortion]}`` or
  ``{hfov_deg, width, height}`` (a guess, :meth:`Camera.from_hfov`).

Conventions (design.md §4.7): pixel (u, v) is the centre of column u, row v (integer centres,
OpenCV's and KITTI's convention, and the one ``psdif.geometry`` warps with), so an image of width W spans
[-0.5, W - 0.5] and its centre is (W - 1) / 2. Distortion coefficients are in OpenCV's order
(k1, k2, p1, p2[, k3[, k4, k5, k6[, s1..s4[, tx, ty]]]]); ``None`` means none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DISTORTION_SIZES = (4, 5, 8, 12, 14)  # the coefficient counts OpenCV's pinhole model accepts
PINHOLE_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")  # ROS names of OpenCV's pinhole order
INLINE_KEYS = {"fx", "fy", "cx", "cy", "width", "height", "distortion"}
HFOV_KEYS = {"hfov_deg", "width", "height"}
MAX_SKEW = 1e-9  # |K[0, 1]| / fx above this is a skewed camera, which psdif's pinhole model does not have


class CameraError(ValueError):
    """A camera file or mapping psdif cannot use; the message names the file and the key."""


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels of the native ``width`` x ``height`` image (integer pixel centres).

    distortion: OpenCV-ordered coefficients (k1, k2, p1, p2[, k3 ...]) or None; guessed: True when the
    numbers are an assumption (:meth:`from_hfov`), not a calibration; source: where they came from.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] | None = None
    model: str = "pinhole"
    guessed: bool = False
    source: str = "<mapping>"

    def __post_init__(self):
        where = self.source
        for name in ("fx", "fy", "cx", "cy"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise CameraError(f"{where}: {name} = {value!r} is not a finite number")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise CameraError(f"{where}: {name} = {value!r} is not a positive whole number of pixels")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraError(f"{where}: focal lengths must be positive, got fx = {self.fx}, fy = {self.fy}")
        if not (-0.5 <= self.cx <= self.width - 0.5 and -0.5 <= self.cy <= self.height - 0.5):
            raise CameraError(f"{where}: principal point ({self.cx}, {self.cy}) lies outside the "
                              f"{self.width}x{self.height} image; is the image size right?")
        if self.model != "pinhole":
            raise CameraError(f"{where}: camera model {self.model!r} is not supported (only 'pinhole')")
        if self.distortion is not None:
            _check_distortion(self.distortion, where)

    @classmethod
    def from_hfov(cls, hfov_deg: float, width: int, height: int, source: str = "") -> "Camera":
        """A guess from the horizontal field of view: square pixels, principal point at the image centre.

        The image spans [-0.5, W - 0.5], so fx = (W / 2) / tan(hfov / 2) and cx = (W - 1) / 2.
        """
        where = source or f"hfov {hfov_deg} degrees"
        if not (isinstance(hfov_deg, (int, float)) and 0 < hfov_deg < 180):
            raise CameraError(f"{where}: hfov_deg = {hfov_deg!r} must be a number of degrees in (0, 180)")
        fx = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(fx, fx, (width - 1) / 2, (height - 1) / 2, width, height, guessed=True, source=where)

    @property
    def K(self) -> np.ndarray:
        """``[3, 3]`` float64 intrinsics in pixels of the native image."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera for the image resized to ``width`` x ``height`` (``cv2.resize``'s mapping).

        With integer pixel centres, native column u lands at u' = sx (u + 0.5) - 0.5 (sx = width / W), so
        fx' = sx fx and cx' = sx (cx + 0.5) - 0.5 (and the same for rows). Distortion coefficients act on
        normalised coordinates and stay as they are.
        """
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=sx * (self.cx + 0.5) - 0.5,
                       cy=sy * (self.cy + 0.5) - 0.5, width=width, height=height)

    def normalised(self) -> np.ndarray:
        """``[3, 3]`` K with row 0 divided by the width and row 1 by the height: the size-free form of
        Monodepth2's KITTI K ([[0.58, 0, 0.5], [0, 1.92, 0.5]]), which is multiplied back by the network size.

        Multiplying back gives cx' = sx cx, half a pixel (sx - 1) / 2 off :meth:`scaled`'s exact cx';
        Monodepth2's convention, kept for ``data.intrinsics: kitti_normalised``-style use.
        """
        K = self.K
        K[0] /= self.width
        K[1] /= self.height
        return K


def _check_distortion(coeffs: tuple[float, ...], where: str) -> None:
    if len(coeffs) not in DISTORTION_SIZES:
        raise CameraError(f"{where}: {len(coeffs)} distortion coefficients; OpenCV's pinhole model takes "
                          f"{', '.join(map(str, DISTORTION_SIZES))} (k1, k2, p1, p2[, k3 ...])")
    if not all(isinstance(c, float) and math.isfinite(c) for c in coeffs):
        raise CameraError(f"{where}: distortion coefficients {coeffs} are not all finite numbers")


# ------------------------------------------------------------------------------------------- reading

def read_camera(source: str | Path | Mapping[str, Any], *, kitti_camera: int = 2) -> Camera:
    """A :class:`Camera` from a camera file (any format of the module docstring) or an inline mapping.

    Raises :class:`CameraError` naming the file (or ``<mapping>``) and the key for a missing file, a
    missing key, or numbers no pinhole camera has (fx <= 0, principal point outside the image, skew, NaN).
    """
    if isinstance(source, Mapping):
        return camera_from_mapping(source, "<mapping>")
    path = Path(source)
    if not path.is_file():
        raise CameraError(f"{path}: camera file not found")
    head = path.read_bytes()[:4096].decode("utf-8", errors="replace").lstrip()
    if head.startswith(("%YAML:", "<?xml", "<opencv_storage")) or "!!opencv-matrix" in head:
        return _read_opencv(path)
    if path.name.startswith("calib_cam_to_cam") or "P_rect_0" in head:
        return _read_kitti(path, kitti_camera)
    return _read_yaml(path)


def camera_from_mapping(data: Mapping[str, Any], where: str) -> Camera:
    """``{fx, fy, cx, cy, width, height[, distortion]}`` or ``{hfov_deg, width, height}`` (a guess)."""
    keys = set(data)
    if "hfov_deg" in keys:
        _check_keys(keys, HFOV_KEYS, HFOV_KEYS, where)
        return Camera.from_hfov(_number(data, "hfov_deg", where), _size(data, "width", where),
                                _size(data, "height", where), source=where)
    _check_keys(keys, INLINE_KEYS - {"distortion"}, INLINE_KEYS, where)
    distortion = data.get("distortion")
    return Camera(*(_number(data, k, where) for k in ("fx", "fy", "cx", "cy")), _size(data, "width", where),
                  _size(data, "height", where), _coefficients(distortion, where, "distortion"), source=where)


def _check_keys(keys: set, required: set, allowed: set, where: str) -> None:
    if missing := sorted(required - keys):
        raise CameraError(f"{where}: missing key {missing[0]!r} (a camera mapping has {', '.join(sorted(allowed))}"
                          f", or hfov_deg, width, height for a guess)")
    if unknown := sorted(map(str, keys - allowed)):
        raise CameraError(f"{where}: unknown key {unknown[0]!r} (a camera mapping has "
                          f"{', '.join(sorted(allowed))})")


def _number(data: Mapping, key: str, where: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CameraError(f"{where}: {key!r} = {value!r} is not a finite number")
    return float(value)


def _size(data: Mapping, key: str, where: str) -> int:
    if key not in data:
        raise CameraError(f"{where}: missing key {key!r} (the image size the intrinsics belong to)")
    value = data[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CameraError(f"{where}: {key!r} = {value!r} is not a positive whole number of pixels")
    return value


def _coefficients(values, where: str, key: str) -> tuple[float, ...] | None:
    """Distortion coefficients as a tuple of floats; None (or an empty list) means none."""
    if values is None:
        return None
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise CameraError(f"{where}: {key!r} is not a list of numbers: {values!r}") from None
    return tuple(float(v) for v in array) if array.size else None


def camera_from_matrix(K, width: int, height: int, distortion, where: str, key: str = "camera_matrix") -> Camera:
    """A :class:`Camera` from a 3x3 matrix, refusing skew and a last row other than (0, 0, 1)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise CameraError(f"{where}: {key!r} must be 3x3, got shape {K.shape}")
    if not np.isfinite(K).all():
        raise CameraError(f"{where}: {key!r} has a value that is not finite: {K.tolist()}")
    if K[1, 0] != 0 or not np.allclose(K[2], [0, 0, 1], rtol=0, atol=1e-12):
        raise CameraError(f"{where}: {key!r} is not an intrinsics matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]: "
                          f"{K.tolist()}")
    if abs(K[0, 1]) > MAX_SKEW * abs(K[0, 0]):
        raise CameraError(f"{where}: {key!r} has skew {K[0, 1]} (K[0][1]); psdif's pinhole camera has none: "
                          "calibrate without skew (OpenCV's default)")
    return Camera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), width, height,
                  distortion, source=where)


def _read_opencv(path: Path) -> Camera:
    import cv2

    where = str(path)
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as exc:
        raise CameraError(f"{path}: not a readable OpenCV FileStorage file ({str(exc).strip()[-200:]})") from None
    try:
        if not fs.isOpened():
            raise CameraError(f"{path}: OpenCV cannot open this FileStorage file")

        def node(key: str, required: bool = True):
            n = fs.getNode(key)
            if n.empty() or n.isNone():
                if required:
                    raise CameraError(f"{path}: missing key {key!r}")
                return None
            return n

        width, height = (_file_size(node(k).real(), k, where) for k in ("image_width", "image_height"))
        K = node("camera_matrix").mat()
        if K is None:
            raise CameraError(f"{path}: 'camera_matrix' is not an !!opencv-matrix")
        coeffs = _node_values(node("distortion_coefficients", required=False), where)
        return camera_from_matrix(K, width, height, coeffs, where)
    finally:
        fs.release()


def _node_values(node, where: str) -> tuple[float, ...] | None:
    """A FileStorage node's numbers: an ``!!opencv-matrix`` or a plain sequence; None for no node."""
    if node is None:
        return None
    if node.isSeq():
        values = [node.at(i).real() for i in range(node.size())]
    else:
        values = node.mat() if node.isMap() else None
    if values is None:
        raise CameraError(f"{where}: 'distortion_coefficients' is neither an !!opencv-matrix nor a list of numbers")
    return _coefficients(values, where, "distortion_coefficients")


def _file_size(value: float, key: str, where: str) -> int:
    if not (math.isfinite(value) and value > 0 and float(value).is_integer()):
        raise CameraError(f"{where}: {key!r} = {value!r} is not a positive whole number of pixels")
    return int(value)


def _read_yaml(path: Path) -> Camera:
    """A ROS ``camera_info`` YAML, or a plain YAML mapping of the inline form."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CameraError(f"{path}: not a camera file psdif reads (OpenCV FileStorage, ROS camera_info YAML, "
                          f"KITTI calib_cam_to_cam.txt or a YAML mapping): {exc}") from None
    if not isinstance(data, dict):
        raise CameraError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    if "camera_matrix" not in data:
        return camera_from_mapping(data, str(path))
    return _camera_info(data, str(path))


def _camera_info(data: dict, where: str) -> Camera:
    """ROS ``camera_info``: ``camera_matrix: {rows, cols, data}`` and its siblings."""
    width, height = _size(data, "image_width", where), _size(data, "image_height", where)
    K = _matrix_data(data, "camera_matrix", where)
    model = data.get("distortion_model", "plumb_bob")
    if model not in PINHOLE_DISTORTION_MODELS:
        raise CameraError(f"{where}: distortion_model {model!r} is not OpenCV's pinhole model "
                          f"({' or '.join(PINHOLE_DISTORTION_MODELS)}); fisheye cameras are not supported")
    coeffs = None
    if data.get("distortion_coefficients") is not None:
        coeffs = _coefficients(_matrix_data(data, "distortion_coefficients", where), where,
                               "distortion_coefficients")
    return camera_from_matrix(np.reshape(K, (3, 3)) if K.size == 9 else K, width, height, coeffs, where)


def _matrix_data(data: dict, key: str, where: str) -> np.ndarray:
    entry = data[key]
    if not isinstance(entry, dict) or "data" not in entry:
        raise CameraError(f"{where}: {key!r} must be a mapping with 'data' (and 'rows', 'cols'), got {entry!r}")
    values = _coefficients(entry["data"], where, f"{key}.data")
    return np.array(values or (), dtype=np.float64)


def _read_kitti(path: Path, cam: int) -> Camera:
    from psdif.data.kitti import KittiError, calib_entry, read_calib_file

    try:
        calib = read_calib_file(path)
        P = calib_entry(calib, f"P_rect_0{cam}", 12, path).reshape(3, 4)
        size = calib_entry(calib, f"S_rect_0{cam}", 2, path)
    except KittiError as exc:
        raise CameraError(str(exc)) from None
    where = f"{path} (camera 0{cam}, rectified)"
    width, height = (_file_size(float(v), k, where) for v, k in zip(size, ("S_rect width", "S_rect height")))
    return camera_from_matrix(P[:, :3], width, height, None, where, key=f"P_rect_0{cam}")
