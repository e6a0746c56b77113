"""Procedural mini-KITTI: street scenes ray-cast in numpy, written in the exact KITTI raw layout.

The embedded default's "download" (SPEC §1, §4.1, §6). One code path then serves real and generated data.

Scene (world frame: x along the street, y to the left, z up, ground z = 0): road with lane markings and a
crosswalk, sidewalks (paving slabs), lawns (terrain) with fences and hedges, buildings (axis-aligned boxes
with window grids, brick or plaster), parked cars (body + cabin boxes), poles with lamp arms, traffic
signs and a traffic light, trees (cylinder trunk + sphere crown), sky. Every primitive is an axis-aligned
box, a sphere or a vertical cylinder, intersected analytically and vectorised over the rays of its
screen-space (or velodyne-grid) bounding rectangle. Anti-aliasing: textures (band-limited periodic noise
tiles, trilinear mip levels; analytically box-filtered markings, windows, bricks, slab seams, cell tones)
are prefiltered over TEXTURE_BLUR output pixels with a per-axis footprint (grazing surfaces blur along
the view), and geometry gets ``supersample``² samples on the pixels that need them (object boundaries,
sub-pixel-thin objects); other pixels are shaded once at their centre. So the true-pose warp of a frame
reproduces its neighbour (tests/test_synthetic.py: ratio ~0.1 of the unwarped photometric error).

Rig (KITTI-like): rectified cam0 at 1.65 m; cam2 0.06 m to its left, cam3 0.48 m to its right (baseline
0.54 m); velodyne 0.27 m behind and 0.08 m above cam0; IMU 0.93 m above the ground. Intrinsics are the
Monodepth2 normalised K: ``fx = 0.58 W``, ``fy = 1.92 H``, ``cx = W/2``, ``cy = H/2`` (pixel centres at
integer coordinates, as Monodepth2's back-projection assumes); ``R_rect_00 = I``.

Motion: 10 Hz; cruise 6-11 m/s with gentle lane-weave turns; every drive stops once at a crosswalk for
several frames with speed exactly 0 (identical poses). Moving frames never go below ``V_CREEP`` m/s, so
an OXTS speed threshold below it separates exactly the stationary frames.

Written per generation (``root`` = ``data.raw_root``)::

    <root>/2030_01_01/calib_{cam_to_cam,velo_to_cam,imu_to_velo}.txt
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/{image_02,image_03}/data/%010d.png, timestamps.txt
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/oxts/{data/%010d.txt, dataformat.txt, timestamps.txt}
    <root>/2030_01_01/2030_01_01_drive_NNNN_sync/velodyne_points/{data/%010d.bin, timestamps*.txt}
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/{depth,semantic}_0{2,3}/%010d.png
        depth: uint16 PNG, metres x 256 (0 = sky or beyond 255 m); semantic: uint8 Cityscapes train ids
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/poses.txt       cam2-to-world [3, 4] per line
    <root>/synthetic_gt/2030_01_01_drive_NNNN_sync/stationary.txt  frame indices with zero speed
    <root>/synthetic_gt/manifest.json                              written last (params hash)
    <splits_dir>/synthetic_drives.txt          "<date>/<drive> train|val|test"
    <splits_dir>/synth_eigen/test_files.txt    "<date>/<drive> <frame> l" (moving test frames)

Note (KITTI convention): ``psdif.data.kitti.generate_depth_map`` stores a point projected at pixel coordinate
``x`` in column ``round(x) - 1``; with integer pixel centres, the velodyne GT is therefore one pixel up
and left of the dense GT, exactly as on real KITTI with its 0-based P_rect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from psdif.config import SyntheticConfig
from psdif.io import atomic_write_bytes, atomic_write_text, params_hash

GENERATOR_VERSION = 1
DATE = "2030_01_01"
DT = 0.1                 # s between frames (10 Hz)
V_CREEP = 0.8            # m/s: the slowest speed of a moving frame
VELO_BEAMS = 64
VELO_AZIMUTHS = 1024     # azimuth steps over 360 degrees
VELO_ELEV_DEG = (2.0, -24.8)
VELO_MAX_RANGE = 120.0   # m
VELO_FORWARD_ONLY = True  # keep x_velo >= 0 (all the Eigen GT uses): halves the scans on disk
CAM_HEIGHT = 1.65        # m, rectified cam0 above ground
IMU_HEIGHT = 0.93
CAM_TX = {2: 0.06, 3: -0.48}   # P_rect_0k[0, 3] / fx: X_camk = X_cam0 + (tx, 0, 0)
EARTH_RADIUS = 6378137.0
LAT0, LON0, ALT0 = 49.0, 8.4, 115.0   # geodetic origin of the street frames (ground level)
MAX_DEPTH_PNG = 255.99

# Cityscapes train ids (SPEC §4.5)
ROAD, SIDEWALK, BUILDING, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, CAR = 8, 9, 10, 13

BOX, SPHERE, CYLINDER = 0, 1, 2
(M_BUILDING, M_CAR, M_POLE, M_ARM, M_LIGHT, M_SIGN, M_CROWN, M_TRUNK, M_HEDGE, M_FENCE) = range(10)
M_GROUND, M_SKY = 10, 11
MAT_KIND = {M_BUILDING: BOX, M_CAR: BOX, M_POLE: CYLINDER, M_ARM: BOX, M_LIGHT: BOX, M_SIGN: BOX, M_CROWN: SPHERE,
            M_TRUNK: CYLINDER, M_HEDGE: BOX, M_FENCE: BOX}

OXTS_DATAFORMAT = """lat:   latitude of the oxts-unit (deg)
lon:   longitude of the oxts-unit (deg)
alt:   altitude of the oxts-unit (m)
roll:  roll angle (rad),    0 = level, positive = left side up,      range: -pi   .. +pi
pitch: pitch angle (rad),   0 = level, positive = front down,        range: -pi/2 .. +pi/2
yaw:   heading (rad),       0 = east,  positive = counter clockwise, range: -pi   .. +pi
vn:    velocity towards north (m/s)
ve:    velocity towards east (m/s)
vf:    forward velocity, i.e. parallel to earth-surface (m/s)
vl:    leftward velocity, i.e. parallel to earth-surface (m/s)
vu:    upward velocity, i.e. perpendicular to earth-surface (m/s)
ax:    acceleration in x, i.e. in direction of vehicle front (m/s^2)
ay:    acceleration in y, i.e. in direction of vehicle left (m/s^2)
ay:    acceleration in z, i.e. in direction of vehicle top (m/s^2)
af:    forward acceleration (m/s^2)
al:    leftward acceleration (m/s^2)
au:    upward acceleration (m/s^2)
wx:    angular rate around x (rad/s)
wy:    angular rate around y (rad/s)
wz:    angular rate around z (rad/s)
wf:    angular rate around forward axis (rad/s)
wl:    angular rate around leftward axis (rad/s)
wu:    angular rate around upward axis (rad/s)
pos_accuracy:  velocity accuracy (north/east in m)
vel_accuracy:  velocity accuracy (north/east in m/s)
navstat:       navigation status (see navstat_to_string)
numsats:       number of satellites tracked by primary GPS receiver
posmode:       position mode of primary GPS receiver (see gps_mode_to_string)
velmode:       velocity mode of primary GPS receiver (see gps_mode_to_string)
orimode:       orientation mode of primary GPS receiver (see gps_mode_to_string)
"""


# ============================================================================================ files

def _atomic_png(path: Path, image: np.ndarray) -> None:
    """PNG of ``image`` (``[H, W]`` uint8/uint16 or ``[H, W, 3]`` RGB uint8)."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., ::-1])  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def drive_name(index: int) -> str:
    """Folder name of generated drive ``index`` (1-based): ``2030_01_01_drive_NNNN_sync``."""
    return f"{DATE}_drive_{index:04d}_sync"


def gt_dir(root: Path, drive: str) -> Path:
    """Ground-truth folder of a generated drive (beside, not inside, the KITTI folders)."""
    return Path(root) / "synthetic_gt" / drive


# ============================================================================================ rig

def _transform(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


# velodyne (x fwd, y left, z up) -> cam (x right, y down, z fwd)
R_CAM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM0_VELO = _transform(R_CAM_VELO, [0.0, -0.08, -0.27])      # calib_velo_to_cam.txt
T_VELO_IMU = _transform(np.eye(3), [-0.81, 0.32, -0.80])      # calib_imu_to_velo.txt


@dataclass(frozen=True)
class Intrinsics:
    """Rectified pinhole intrinsics in pixels of a ``width x height`` image (pixel centres at integers)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])


def kitti_intrinsics(width: int, height: int) -> Intrinsics:
    """Monodepth2's normalised KITTI K (0.58, 1.92, 0.5, 0.5) scaled to ``width x height`` (SPEC §4.2)."""
    return Intrinsics(width, height, 0.58 * width, 1.92 * height, 0.5 * width, 0.5 * height)


def T_cam_imu(cam: int) -> np.ndarray:
    """``[4, 4]`` IMU -> rectified camera ``cam`` (0, 2 or 3) transform of the generated rig."""
    shift = _transform(np.eye(3), [CAM_TX.get(cam, 0.0), 0.0, 0.0])
    return shift @ T_CAM0_VELO @ T_VELO_IMU


def _fmt(values) -> str:
    return " ".join(f"{v:.6e}" for v in np.ravel(values))


def calib_texts(intr: Intrinsics) -> dict[str, str]:
    """The three KITTI calibration files of the generated rig (same keys as real KITTI)."""
    size = [intr.width, intr.height]
    lines = ["calib_time: 01-Jan-2030 12:00:00", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        tx = {0: 0.0, 1: -0.54, 2: CAM_TX[2], 3: CAM_TX[3]}[cam]
        P = np.hstack([intr.K, [[intr.fx * tx], [0.0], [0.0]]])
        lines += [f"S_{cam:02d}: {_fmt(size)}", f"K_{cam:02d}: {_fmt(intr.K)}", f"D_{cam:02d}: {_fmt(np.zeros(5))}",
                  f"R_{cam:02d}: {_fmt(np.eye(3))}", f"T_{cam:02d}: {_fmt([-tx, 0.0, 0.0])}",
                  f"S_rect_{cam:02d}: {_fmt(size)}", f"R_rect_{cam:02d}: {_fmt(np.eye(3))}",
                  f"P_rect_{cam:02d}: {_fmt(P)}"]
    cam_to_cam = "\n".join(lines) + "\n"
    velo_to_cam = (f"calib_time: 01-Jan-2030 12:00:00\nR: {_fmt(T_CAM0_VELO[:3, :3])}\nT: {_fmt(T_CAM0_VELO[:3, 3])}\n"
                   "delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")
    imu_to_velo = f"calib_time: 01-Jan-2030 12:00:00\nR: {_fmt(T_VELO_IMU[:3, :3])}\nT: {_fmt(T_VELO_IMU[:3, 3])}\n"
    return {"calib_cam_to_cam.txt": cam_to_cam, "calib_velo_to_cam.txt": velo_to_cam,
            "calib_imu_to_velo.txt": imu_to_velo}


# ============================================================================================ motion

@dataclass
class Trajectory:
    """Ego (IMU) motion of one drive, one entry per frame.

    x, y: [N] m in the street frame; yaw: [N] rad (0 = +x); speed: [N] m/s (exactly 0 when stationary);
    yaw_rate: [N] rad/s; accel: [N] m/s^2 forward; stationary: sorted frame indices with speed 0.
    """

    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    yaw_rate: np.ndarray
    accel: np.ndarray
    stationary: np.ndarray

    def T_world_imu(self, i: int) -> np.ndarray:
        c, s = math.cos(self.yaw[i]), math.sin(self.yaw[i])
        return _transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), [self.x[i], self.y[i], IMU_HEIGHT])

    def T_world_cam(self, i: int, cam: int) -> np.ndarray:
        return self.T_world_imu(i) @ np.linalg.inv(T_cam_imu(cam))

    def T_world_velo(self, i: int) -> np.ndarray:
        return self.T_world_imu(i) @ np.linalg.inv(T_VELO_IMU)


def make_trajectory(rng: np.random.Generator, n_frames: int, lane_y: float) -> Trajectory:
    """Speed profile with one stop (a run of frames at exactly 0 m/s) and a gentle lane-weave heading."""
    i = np.arange(n_frames, dtype=np.float64)
    v_cruise = rng.uniform(6.0, 11.0) * (1 + 0.12 * np.sin(2 * np.pi * i / rng.uniform(60, 120) + rng.uniform(0, 6.3)))
    stop_len = int(np.clip(round(n_frames * rng.uniform(0.08, 0.14)), 3, 20))
    lo, hi = max(2, round(0.3 * n_frames)), max(2, round(0.7 * n_frames) - stop_len)
    a = int(rng.integers(lo, max(lo, hi) + 1))
    b = a + stop_len - 1
    if b > n_frames - 3:
        raise ValueError(f"synthetic.frames_per_drive={n_frames} is too short for a stop; use >= 8")
    decel, accel = rng.uniform(2.5, 3.5), rng.uniform(1.5, 2.5)
    speed = v_cruise.copy()
    before, after = i < a, i > b
    speed[before] = np.minimum(v_cruise[before], V_CREEP + decel * (a - 1 - i[before]) * DT)
    speed[after] = np.minimum(v_cruise[after], V_CREEP + accel * (i[after] - b - 1) * DT)
    speed[a:b + 1] = 0.0
    # arc length: trapezoid between frames (zero-speed intervals add exactly 0)
    s = np.concatenate([[0.0], np.cumsum((speed[1:] + speed[:-1]) * 0.5 * DT)])
    amp, wavelength, phase = rng.uniform(0.025, 0.05), rng.uniform(30.0, 45.0), rng.uniform(0, 2 * np.pi)
    s_fine = np.linspace(0.0, s[-1] + 1.0, int((s[-1] + 1.0) / 0.05) + 2)
    th_fine = amp * np.sin(2 * np.pi * s_fine / wavelength + phase)
    ds = np.diff(s_fine)
    x_fine = np.concatenate([[0.0], np.cumsum(0.5 * (np.cos(th_fine[1:]) + np.cos(th_fine[:-1])) * ds)])
    y_fine = np.concatenate([[0.0], np.cumsum(0.5 * (np.sin(th_fine[1:]) + np.sin(th_fine[:-1])) * ds)])
    x = np.interp(s, s_fine, x_fine)
    y = lane_y + np.interp(s, s_fine, y_fine) - np.interp(0.0, s_fine, y_fine)
    yaw = amp * np.sin(2 * np.pi * s / wavelength + phase)
    yaw_rate = amp * 2 * np.pi / wavelength * np.cos(2 * np.pi * s / wavelength + phase) * speed
    acc = np.gradient(speed, DT)
    return Trajectory(x, y, yaw, speed, yaw_rate, acc, np.arange(a, b + 1))


def oxts_packet(traj: Trajectory, i: int) -> np.ndarray:
    """KITTI OXTS packet ``[30]`` of frame ``i`` (see OXTS_DATAFORMAT); vf/vl/vu are the true speeds."""
    scale = math.cos(math.radians(LAT0))
    mx0 = scale * math.radians(LON0) * EARTH_RADIUS
    my0 = scale * EARTH_RADIUS * math.log(math.tan(math.radians(90 + LAT0) / 2))
    mx, my = mx0 + traj.x[i], my0 + traj.y[i]
    lon = math.degrees(mx / (scale * EARTH_RADIUS))
    lat = math.degrees(2 * math.atan(math.exp(my / (scale * EARTH_RADIUS)))) - 90
    yaw, v, w, a = traj.yaw[i], traj.speed[i], traj.yaw_rate[i], traj.accel[i]
    g = 9.81
    lat_acc = v * w
    return np.array([lat, lon, ALT0 + IMU_HEIGHT, 0.0, 0.0, yaw,
                     v * math.sin(yaw), v * math.cos(yaw), v, 0.0, 0.0,      # vn ve vf vl vu
                     a, lat_acc, g, a, lat_acc, g,                           # ax ay az af al au
                     0.0, 0.0, w, 0.0, 0.0, w,                               # wx wy wz wf wl wu
                     0.02, 0.01, 4, 11, 6, 6, 6], dtype=np.float64)


def _oxts_line(p: np.ndarray) -> str:
    head = [f"{p[0]:.15g}", f"{p[1]:.15g}"] + [f"{v:.14g}" for v in p[2:25]]
    return " ".join(head + [str(int(v)) for v in p[25:]]) + "\n"


def _timestamps(start: float, n: int, offset: float = 0.0) -> str:
    """KITTI timestamps (``2030-01-01 12:00:00.000000000``) of ``n`` frames every DT seconds."""
    lines = []
    for i in range(n):
        ns = int(round((start + offset + i * DT) * 1e9))
        sec, frac = divmod(ns, 10**9)
        h, rem = divmod(sec, 3600)
        lines.append(f"2030-01-01 {h:02d}:{rem // 60:02d}:{rem % 60:02d}.{frac:09d}")
    return "\n".join(lines) + "\n"


# ============================================================================================ textures

class NoiseTile:
    """Periodic band-limited noise ``[n, n]`` with mip levels (level k blurred to >= 4·2^k texels).

    texel: metres per texel; beta: spectral slope (1/f^beta amplitude). Zero mean, unit std at level 0.
    """

    def __init__(self, rng: np.random.Generator, texel: float, beta: float, n: int = 256, levels: int = 7):
        self.n, self.texel, self.levels = n, float(texel), levels
        f = np.fft.fftfreq(n)
        k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
        spec = np.fft.fft2(rng.standard_normal((n, n)))
        amp = np.where(k > 0, np.maximum(k, 1.0 / n) ** -beta, 0.0)
        out = []
        for lev in range(levels):
            cutoff = 0.25 / 2 ** lev                      # cycles per texel: wavelength >= 4·2^lev texels
            tile = np.real(np.fft.ifft2(spec * amp * np.exp(-(k / cutoff) ** 2 * 2.0)))
            out.append(tile)
        std = out[0].std()
        self.data = (np.stack(out) / std).astype(np.float32).ravel()

    def sample(self, u: np.ndarray, v: np.ndarray, fp: np.ndarray) -> np.ndarray:
        """Trilinear lookup at ``(u, v)`` metres: bilinear in the two mip levels around footprint ``fp``
        metres (level k keeps wavelengths >= 2 fp), blended linearly in log2(fp). ``[n]`` each."""
        n = self.n
        lev = np.clip(np.log2(np.maximum(fp, 1e-6) / (2 * self.texel)), 0, self.levels - 1.001).astype(np.float32)
        l0 = lev.astype(np.int64)
        fl = lev - l0
        x = u / self.texel
        y = v / self.texel
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = (x - x0).astype(np.float32)
        fy = (y - y0).astype(np.float32)
        ix = x0.astype(np.int64) & (n - 1)
        iy = y0.astype(np.int64) & (n - 1)
        ix1 = (ix + 1) & (n - 1)
        base0 = l0 * (n * n)
        row0 = base0 + iy * n
        row1 = base0 + ((iy + 1) & (n - 1)) * n
        d = self.data
        out = None
        for off, w in ((0, 1 - fl), (n * n, fl)):
            top = d[row0 + off + ix] * (1 - fx) + d[row0 + off + ix1] * fx
            bot = d[row1 + off + ix] * (1 - fx) + d[row1 + off + ix1] * fx
            val = (top * (1 - fy) + bot * fy) * w
            out = val if out is None else out + val
        return out


def _box(d: np.ndarray, hw, fp: np.ndarray) -> np.ndarray:
    """Coverage of the interval ``[-hw, hw]`` by a box filter of width ``fp`` centred at offset ``d``."""
    return np.clip(np.minimum(d + fp * 0.5, hw) - np.maximum(d - fp * 0.5, -hw), 0, None) / fp


def _hash(a: np.ndarray, b: np.ndarray, c) -> np.ndarray:
    """Deterministic per-cell random value in [0, 1) of integer cells ``(a, b)`` and salt ``c``."""
    a, b, c = (np.asarray(v, np.int64) for v in (a, b, c))
    h = (a * 73856093) ^ (b * 19349663) ^ (c * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return ((h & 0xFFFF).astype(np.float32)) / 65536.0


# ============================================================================================ scene

@dataclass
class Scene:
    """Static street scene of one drive.

    kind [N] (BOX, SPHERE, CYLINDER); lo, hi [N, 3] m: the primitive's axis-aligned bounds (a sphere is
    its bounding cube, a vertical cylinder its bounding box); cls [N] train id; mat [N] material;
    color [N, 3] albedo; aux [N, 6] material parameters. Ground zones by |y|: road < road_half <=
    sidewalk < road_half + sidewalk[side] <= terrain (side 0: y < 0, 1: y > 0).
    """

    kind: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    cls: np.ndarray
    mat: np.ndarray
    color: np.ndarray
    aux: np.ndarray
    road_half: float
    sidewalk: tuple[float, float]
    crosswalks: list[float]
    sun: np.ndarray
    tiles: dict

    @property
    def centre(self) -> np.ndarray:
        return (self.lo + self.hi) * 0.5

    @property
    def radius(self) -> np.ndarray:
        return (self.hi[:, 0] - self.lo[:, 0]) * 0.5


class _Builder:
    def __init__(self):
        self.rows = []

    def add(self, kind, lo, hi, cls, mat, color, aux=()):
        aux = list(aux) + [0.0] * (6 - len(aux))
        self.rows.append((kind, lo, hi, cls, mat, color, aux))

    def arrays(self):
        cols = list(zip(*self.rows))
        return dict(kind=np.array(cols[0], np.int8), lo=np.array(cols[1], np.float32),
                    hi=np.array(cols[2], np.float32), cls=np.array(cols[3], np.uint8),
                    mat=np.array(cols[4], np.int16), color=np.array(cols[5], np.float32),
                    aux=np.array(cols[6], np.float32))


FACADES = np.array([[0.78, 0.72, 0.62], [0.62, 0.60, 0.58], [0.85, 0.83, 0.78], [0.62, 0.36, 0.28],
                    [0.80, 0.70, 0.45], [0.55, 0.60, 0.66], [0.70, 0.55, 0.45], [0.45, 0.45, 0.48]])
CAR_PAINT = np.array([[0.75, 0.75, 0.78], [0.12, 0.12, 0.14], [0.55, 0.08, 0.07], [0.10, 0.20, 0.45],
                      [0.45, 0.47, 0.50], [0.85, 0.85, 0.82], [0.20, 0.32, 0.22], [0.60, 0.50, 0.30]])


def make_scene(rng: np.random.Generator, x_min: float, x_max: float, stop_x: float, road_half: float) -> Scene:
    """Random street between ``x_min`` and ``x_max``; a crosswalk and traffic light just past ``stop_x``."""
    b = _Builder()
    sidewalk = (rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5))
    cross_x = stop_x + rng.uniform(4.0, 6.0)
    for side, sgn in ((0, -1.0), (1, 1.0)):
        sw = sidewalk[side]
        y_out = road_half + sw
        setback = 0.0 if rng.random() < 0.5 else rng.uniform(2.0, 6.0)
        _add_buildings(b, rng, sgn, y_out + setback, x_min, x_max)
        if setback > 0:
            _add_lawn_edge(b, rng, sgn, y_out, setback, x_min, x_max)
        _add_trees(b, rng, sgn, y_out - 0.8 if setback == 0 else y_out + setback * 0.5, x_min, x_max)
        _add_poles(b, rng, sgn, road_half + 0.45, x_min, x_max)
        _add_cars(b, rng, sgn, road_half, x_min, x_max, (cross_x - 14.0, cross_x + 9.0))
    # traffic light on the right, just past the crosswalk, facing the ego vehicle
    y_tl = -(road_half + 0.5)
    b.add(CYLINDER, (cross_x + 4.6, y_tl - 0.1, 0.0), (cross_x + 4.8, y_tl + 0.1, 3.6), POLE, M_POLE, (0.4, 0.4, 0.42))
    b.add(BOX, (cross_x + 4.5, y_tl - 0.2, 2.6), (cross_x + 4.75, y_tl + 0.2, 3.6), TRAFFIC_LIGHT, M_LIGHT,
          (0.08, 0.08, 0.08), (y_tl, 3.35))
    sun_az, sun_el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(30), np.radians(60))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)], np.float32)
    tiles = {"fine": NoiseTile(rng, 0.02, 0.8), "med": NoiseTile(rng, 0.1, 1.0), "leaf": NoiseTile(rng, 0.03, 0.5)}
    return Scene(**b.arrays(), road_half=road_half, sidewalk=sidewalk, crosswalks=[cross_x], sun=sun, tiles=tiles)


def _yspan(sgn, y0, y1):
    return (min(sgn * y0, sgn * y1), max(sgn * y0, sgn * y1))


def _add_buildings(b, rng, sgn, y_front, x_min, x_max):
    x = x_min
    while x < x_max:
        length = rng.uniform(8.0, 26.0)
        y0 = y_front + rng.uniform(0.0, 0.8)
        ya, yb = _yspan(sgn, y0, y0 + rng.uniform(8.0, 14.0))
        height = rng.uniform(6.0, 22.0)
        color = FACADES[rng.integers(len(FACADES))] * rng.uniform(0.85, 1.1)
        sx, sz = rng.uniform(2.4, 3.6), rng.uniform(2.8, 3.4)
        aux = (sx, sz, sx * rng.uniform(0.35, 0.6), sz * rng.uniform(0.4, 0.6), float(rng.random() < 0.35),
               rng.uniform(0.5, 1.2))
        b.add(BOX, (x, ya, 0.0), (x + length, yb, height), BUILDING, M_BUILDING, color, aux)
        x += length + (0.0 if rng.random() < 0.5 else rng.uniform(2.0, 8.0))


def _add_lawn_edge(b, rng, sgn, y_out, setback, x_min, x_max):
    """Fences or hedges along the outer sidewalk edge, with gaps."""
    x = x_min
    while x < x_max:
        length = rng.uniform(8.0, 30.0)
        if rng.random() < 0.6:
            if rng.random() < 0.5:
                ya, yb = _yspan(sgn, y_out + 0.05, y_out + 0.10)
                h = rng.uniform(1.0, 1.5)
                color = (0.45, 0.33, 0.22) if rng.random() < 0.5 else (0.55, 0.56, 0.58)
                b.add(BOX, (x, ya, 0.0), (x + length, yb, h), FENCE, M_FENCE, color, (h,))
            else:
                ya, yb = _yspan(sgn, y_out + 0.1, y_out + 0.1 + min(1.0, setback * 0.5))
                color = np.array((0.16, 0.30, 0.10)) * rng.uniform(0.8, 1.2)
                b.add(BOX, (x, ya, 0.0), (x + length, yb, rng.uniform(0.8, 1.4)), VEGETATION, M_HEDGE, color)
        x += length + rng.uniform(2.0, 10.0)


def _add_trees(b, rng, sgn, y_tree, x_min, x_max):
    x = x_min + rng.uniform(0, 10)
    while x < x_max:
        if rng.random() < 0.65:
            y = sgn * y_tree
            r, h, R = rng.uniform(0.12, 0.22), rng.uniform(2.6, 3.6), rng.uniform(1.4, 2.6)
            b.add(CYLINDER, (x - r, y - r, 0.0), (x + r, y + r, h + 0.3), VEGETATION, M_TRUNK,
                  np.array((0.32, 0.24, 0.16)) * rng.uniform(0.8, 1.2))
            zc = h + 0.5 * R + 0.3
            b.add(SPHERE, (x - R, y - R, zc - R), (x + R, y + R, zc + R), VEGETATION, M_CROWN,
                  np.array((0.17, 0.31, 0.10)) * rng.uniform(0.8, 1.25))
        x += rng.uniform(8.0, 16.0)


def _add_poles(b, rng, sgn, y_pole, x_min, x_max):
    x = x_min + rng.uniform(0, 20)
    while x < x_max:
        y = sgn * y_pole
        r, h = rng.uniform(0.07, 0.12), rng.uniform(5.0, 8.5)
        grey = (0.42, 0.43, 0.45)
        b.add(CYLINDER, (x - r, y - r, 0.0), (x + r, y + r, h), POLE, M_POLE, grey)
        ya, yb = _yspan(sgn, y_pole - 1.4, y_pole)
        b.add(BOX, (x - 0.08, ya, h - 0.18), (x + 0.08, yb, h - 0.05), POLE, M_ARM, grey)
        if rng.random() < 0.35:
            color = ((0.1, 0.25, 0.6), (0.7, 0.1, 0.1), (0.85, 0.85, 0.85))[rng.integers(3)]
            b.add(BOX, (x - r - 0.04, y - 0.3, 2.2), (x - r - 0.01, y + 0.3, 2.8), TRAFFIC_SIGN, M_SIGN, color,
                  (y, 2.5))
        x += rng.uniform(18.0, 35.0)


def _add_cars(b, rng, sgn, road_half, x_min, x_max, keep_clear):
    x = x_min + rng.uniform(0, 5)
    while x < x_max:
        length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
        if rng.random() < 0.55 and not (keep_clear[0] < x + length and x < keep_clear[1]):
            yc = sgn * (road_half - 0.25 - width / 2)
            color = CAR_PAINT[rng.integers(len(CAR_PAINT))] * rng.uniform(0.85, 1.1)
            hb = rng.uniform(0.85, 1.0)
            b.add(BOX, (x, yc - width / 2, 0.12), (x + length, yc + width / 2, hb), CAR, M_CAR, color,
                  (x + length / 2, yc, length, width, 0.0))
            cl = length * rng.uniform(0.5, 0.6)
            c0 = x + length * rng.uniform(0.18, 0.3)
            b.add(BOX, (c0, yc - width / 2 + 0.08, hb), (c0 + cl, yc + width / 2 - 0.08, hb + rng.uniform(0.4, 0.55)),
                  CAR, M_CAR, color, (x + length / 2, yc, length, width, 1.0))
            x += length + rng.uniform(0.8, 3.0)
        else:
            x += rng.uniform(4.0, 15.0)


# ============================================================================================ ray casting

@dataclass
class Rays:
    """A grid of rays from one origin in the world frame.

    origin: [3] m; d: 3 arrays [R, C] (unnormalised world directions; for a camera grid the camera-frame
    z component is 1, so the hit parameter t is the z depth); inv: their reciprocals; dd = |d|^2;
    dxy = dx^2 + dy^2.
    """

    origin: np.ndarray
    d: list
    inv: list
    dd: np.ndarray
    dxy: np.ndarray

    @staticmethod
    def make(origin: np.ndarray, R: np.ndarray, local: np.ndarray) -> "Rays":
        """``local``: [R, C, 3] directions in the sensor frame; ``R``: sensor-to-world rotation."""
        d = [np.ascontiguousarray((local @ R[a].astype(np.float32))) for a in range(3)]
        inv = [1.0 / np.where(np.abs(c) < 1e-9, np.float32(1e-9), c) for c in d]
        dxy = d[0] * d[0] + d[1] * d[1]
        return Rays(origin.astype(np.float32), d, inv, dxy + d[2] * d[2], dxy)


def _hit_box(scene: Scene, j: int, rays: Rays, sl) -> np.ndarray:
    o = rays.origin
    tn = tf = None
    for a in range(3):
        inv = rays.inv[a][sl]
        t1 = (scene.lo[j, a] - o[a]) * inv
        t2 = (scene.hi[j, a] - o[a]) * inv
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tn = near if tn is None else np.maximum(tn, near, out=tn)
        tf = far if tf is None else np.minimum(tf, far, out=tf)
    return np.where((tn <= tf) & (tn > 1e-4), tn, np.float32(np.inf))


def _hit_sphere(scene: Scene, j: int, rays: Rays, sl) -> np.ndarray:
    c = (scene.lo[j] + scene.hi[j]) * 0.5 - rays.origin
    r = (scene.hi[j, 0] - scene.lo[j, 0]) * 0.5
    bq = rays.d[0][sl] * c[0] + rays.d[1][sl] * c[1] + rays.d[2][sl] * c[2]
    dd = rays.dd[sl]
    disc = bq * bq - dd * (c @ c - r * r)
    t = (bq - np.sqrt(np.maximum(disc, 0))) / dd
    return np.where((disc > 0) & (t > 1e-4), t, np.float32(np.inf))


def _hit_cylinder(scene: Scene, j: int, rays: Rays, sl) -> np.ndarray:
    o = rays.origin
    cx = (scene.lo[j, 0] + scene.hi[j, 0]) * 0.5 - o[0]
    cy = (scene.lo[j, 1] + scene.hi[j, 1]) * 0.5 - o[1]
    r = (scene.hi[j, 0] - scene.lo[j, 0]) * 0.5
    bq = rays.d[0][sl] * cx + rays.d[1][sl] * cy
    dxy = rays.dxy[sl]
    disc = bq * bq - dxy * (cx * cx + cy * cy - r * r)
    t = (bq - np.sqrt(np.maximum(disc, 0))) / np.maximum(dxy, 1e-12)
    z = o[2] + t * rays.d[2][sl]
    return np.where((disc > 0) & (t > 1e-4) & (z >= scene.lo[j, 2]) & (z <= scene.hi[j, 2]), t, np.float32(np.inf))


_HIT = {BOX: _hit_box, SPHERE: _hit_sphere, CYLINDER: _hit_cylinder}


def cast(scene: Scene, rays: Rays, rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray: ``t`` [R, C] float32 (inf = sky) and ``pid`` [R, C] int32 (0 sky,
    1 ground, j + 2 primitive j). ``rects``: (j, r0, r1, c0, c1) blocks of rays primitive j can hit."""
    dz = rays.d[2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.where(dz < -1e-6, -rays.origin[2] / dz, np.float32(np.inf)).astype(np.float32)
        pid = np.isfinite(t).astype(np.int32)
        for j, r0, r1, c0, c1 in rects:
            sl = (slice(r0, r1), slice(c0, c1))
            th = _HIT[scene.kind[j]](scene, j, rays, sl)
            tb = t[sl]
            better = th < tb
            np.copyto(tb, th, where=better)
            pid[sl][better] = j + 2
    return t, pid


_CORNER_BITS = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], bool)
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def _corners(scene: Scene) -> np.ndarray:
    """[N, 8, 3] world corners of every primitive's bounds."""
    return np.where(_CORNER_BITS[None], scene.hi[:, None, :], scene.lo[:, None, :]).astype(np.float64)


def camera_rects(scene: Scene, corners: np.ndarray, T_cam_world: np.ndarray, intr: Intrinsics,
                 max_depth: float = 300.0) -> list[tuple[int, int, int, int, int]]:
    """Output-pixel rectangles (j, r0, r1, c0, c1) that may see primitive j (exact hull of the bounds
    clipped at the near plane, plus one pixel)."""
    near = 0.05
    pc = corners @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = pc[..., 2]
    pa, pb = pc[:, _EDGES[:, 0]], pc[:, _EDGES[:, 1]]
    za, zb = pa[..., 2], pb[..., 2]
    cross = (za - near) * (zb - near) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(cross, (near - za) / (zb - za), 0.0)
    pts = np.concatenate([pc, pa + w[..., None] * (pb - pa)], axis=1)
    valid = np.concatenate([z >= near, cross], axis=1)
    zz = np.maximum(pts[..., 2], near)
    u = intr.fx * pts[..., 0] / zz + intr.cx
    v = intr.fy * pts[..., 1] / zz + intr.cy
    inf = np.inf
    umin, umax = np.where(valid, u, inf).min(1), np.where(valid, u, -inf).max(1)
    vmin, vmax = np.where(valid, v, inf).min(1), np.where(valid, v, -inf).max(1)
    keep = valid.any(1) & (np.where(valid, pts[..., 2], inf).min(1) < max_depth)
    out = []
    for j in np.flatnonzero(keep):
        c0, c1 = max(0, int(math.floor(umin[j] - 1.5))), min(intr.width, int(math.ceil(umax[j] + 1.5)))
        r0, r1 = max(0, int(math.floor(vmin[j] - 1.5))), min(intr.height, int(math.ceil(vmax[j] + 1.5)))
        if c1 > c0 and r1 > r0:
            out.append((int(j), r0, r1, c0, c1))
    return out


def _velo_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Beam elevations [64] (descending), azimuths [2A] (two turns, so any span is one slice) and local
    unit directions [64, 2A, 3] in the velodyne frame."""
    el = np.radians(np.linspace(VELO_ELEV_DEG[0], VELO_ELEV_DEG[1], VELO_BEAMS))
    step = 2 * np.pi / VELO_AZIMUTHS
    az = -np.pi + (np.arange(2 * VELO_AZIMUTHS) + 0.5) * step
    local = np.stack([np.cos(el)[:, None] * np.cos(az)[None], np.cos(el)[:, None] * np.sin(az)[None],
                      np.broadcast_to(np.sin(el)[:, None], (VELO_BEAMS, az.size))], -1)
    return el, az, local.astype(np.float32)


def velo_rects(scene: Scene, corners: np.ndarray, T_world_velo: np.ndarray, el: np.ndarray
               ) -> list[tuple[int, int, int, int, int]]:
    """Beam/azimuth blocks (j, r0, r1, c0, c1) of the two-turn velodyne grid that may hit primitive j.
    Assumes a level sensor (roll = pitch = 0, as the generated motion is)."""
    o = T_world_velo[:3, 3]
    yaw = math.atan2(T_world_velo[1, 0], T_world_velo[0, 0])
    rel = corners - o
    az = np.arctan2(rel[..., 1], rel[..., 0]) - yaw
    ac = np.arctan2(np.sin(az).mean(1), np.cos(az).mean(1))
    off = np.angle(np.exp(1j * (az - ac[:, None])))
    amin, amax = ac + off.min(1), ac + off.max(1)
    shift = np.where(amin < -np.pi, 2 * np.pi, 0.0)
    amin, amax = amin + shift, amax + shift
    gx = np.maximum(np.maximum(scene.lo[:, 0] - o[0], o[0] - scene.hi[:, 0]), 0)
    gy = np.maximum(np.maximum(scene.lo[:, 1] - o[1], o[1] - scene.hi[:, 1]), 0)
    rho_min = np.hypot(gx, gy)
    rho_max = np.hypot(rel[..., 0], rel[..., 1]).max(1)
    inside = rho_min <= 1e-6
    zt, zb = scene.hi[:, 2] - o[2], scene.lo[:, 2] - o[2]
    emax = np.arctan2(zt, np.where(zt > 0, np.maximum(rho_min, 1e-6), rho_max))
    emin = np.arctan2(zb, np.where(zb > 0, rho_max, np.maximum(rho_min, 1e-6)))
    step = 2 * np.pi / VELO_AZIMUTHS
    out = []
    for j in np.flatnonzero(rho_min < VELO_MAX_RANGE):
        r0 = int(np.searchsorted(-el, -emax[j] - 1e-6))
        r1 = int(np.searchsorted(-el, -emin[j] + 1e-6, side="right"))
        if inside[j]:
            c0, c1 = 0, VELO_AZIMUTHS
        else:
            c0 = max(0, int(math.floor((amin[j] + np.pi) / step - 0.5)))
            c1 = min(2 * VELO_AZIMUTHS, int(math.ceil((amax[j] + np.pi) / step - 0.5)) + 1)
        if r1 > r0 and c1 > c0:
            out.append((int(j), r0, r1, c0, c1))
    return out


# ============================================================================================ shading

AMBIENT, DIFFUSE = 0.55, 0.5
TEXTURE_BLUR = 2.0  # texture prefilter width in output pixels (bilinear warps keep >= 4 px periods)


class Footprint:
    """Texture prefilter widths (m) of ``n`` hits: ``a`` = range x pixel angle; ``x, y, z`` = the
    footprint along each world axis on the hit surface, ``a·sqrt(1 + (e·v)² / cos²θ)`` for a unit ray
    ``v`` meeting the surface at incidence cosine ``cos θ`` (the pixel's ellipse stretched along the
    projected ray: grazing views blur along the street, not across it)."""

    def __init__(self, a: np.ndarray, v: list, cos: np.ndarray):
        c2 = np.maximum(cos, 0.03) ** 2
        self.a = a
        self.x, self.y, self.z = (a * np.sqrt(1 + v[k] * v[k] / c2) for k in range(3))
        self.iso = a / np.sqrt(np.maximum(cos, 0.03))

    def __getitem__(self, sel) -> "Footprint":
        out = Footprint.__new__(Footprint)
        out.a, out.x, out.y, out.z, out.iso = self.a[sel], self.x[sel], self.y[sel], self.z[sel], self.iso[sel]
        return out

    def facade(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(horizontal, vertical) footprints on vertical faces (horizontal axis as in ``_facade_u``)."""
        return np.where(np.abs(n[:, 0]) > 0.5, self.y, self.x), self.z


def shade(scene: Scene, rays: Rays, t: np.ndarray, pid: np.ndarray, pixel_angle: float) -> np.ndarray:
    """Linear RGB ``[n, 3]`` of the ``n`` rays of a cast (any shape, flattened): albedo x (ambient +
    Lambertian sun) on hits, sky elsewhere. ``pixel_angle``: radians, the texture prefilter width.
    Rays are grouped by material so each material function runs once on its rays."""
    pid_f, t_f = pid.ravel(), t.ravel()
    d_f = [c.ravel() for c in rays.d]
    dd_f = rays.dd.ravel()
    lut = np.concatenate([[M_SKY, M_GROUND], scene.mat]).astype(np.int16)
    mats = lut[pid_f]
    order = np.argsort(mats, kind="stable")
    ms = mats[order]
    cuts = np.flatnonzero(ms[1:] != ms[:-1]) + 1
    rgb = np.empty((pid_f.size, 3), np.float32)
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, ms.size]):
        m, sel = int(ms[a]), order[a:b]
        d = [c[sel] for c in d_f]
        if m == M_SKY:
            rgb[sel] = _sky(scene, d, pixel_angle)
            continue
        th = t_f[sel]
        p = [rays.origin[k] + th * d[k] for k in range(3)]
        dn = np.sqrt(dd_f[sel])
        v = [c / dn for c in d]
        if m == M_GROUND:
            fp = Footprint(th * dn * pixel_angle, v, np.abs(v[2]))
            rgb[sel] = _ground(scene, p, fp) * np.float32(AMBIENT + DIFFUSE * max(float(scene.sun[2]), 0.0))
            continue
        j = pid_f[sel] - 2
        n = _normals(scene, MAT_KIND[m], j, p)
        fp = Footprint(th * dn * pixel_angle, v, np.abs(n[:, 0] * v[0] + n[:, 1] * v[1] + n[:, 2] * v[2]))
        light = AMBIENT + DIFFUSE * np.clip(n @ scene.sun, 0, None)
        rgb[sel] = _MATERIALS[m](scene, j, p, n, fp) * light[:, None]
    return rgb


def classes(scene: Scene, rays: Rays, t: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """Cityscapes train id ``uint8`` of every ray of a cast (shape of ``pid``); sky = 10."""
    pid_f = pid.ravel()
    lut = np.concatenate([[SKY, ROAD], scene.cls]).astype(np.uint8)
    out = lut[pid_f]
    g = np.flatnonzero(pid_f == 1)
    if g.size:
        th = t.ravel()[g]
        y = rays.origin[1] + th * rays.d[1].ravel()[g]
        ay = np.abs(y)
        sw = np.where(y > 0, scene.sidewalk[1], scene.sidewalk[0])
        out[g] = np.where(ay < scene.road_half, ROAD, np.where(ay < scene.road_half + sw, SIDEWALK, TERRAIN))
    return out.reshape(pid.shape)


def _normals(scene: Scene, kind: int, j: np.ndarray, p: list) -> np.ndarray:
    """Unit outward normals ``[n, 3]`` at hit points ``p`` on primitives ``j`` (all of ``kind``)."""
    n = np.zeros((j.size, 3), np.float32)
    if kind == BOX:
        lo, hi = scene.lo[j], scene.hi[j]
        dist = np.stack([np.abs(p[a] - lo[:, a]) for a in range(3)] + [np.abs(p[a] - hi[:, a]) for a in range(3)], 1)
        face = dist.argmin(1)
        n[np.arange(j.size), face % 3] = np.where(face < 3, -1.0, 1.0)
    else:
        c, r = scene.centre[j], scene.radius[j]
        for a in range(3 if kind == SPHERE else 2):
            n[:, a] = (p[a] - c[:, a]) / r
    return n


def _cell_tone(u: np.ndarray, w: np.ndarray, cu: float, cw: float, fu: np.ndarray, fw: np.ndarray, salt,
               row_shift: float = 0.0) -> np.ndarray:
    """Per-cell random tone in [0, 1) of a ``cu x cw`` grid (rows shifted by ``row_shift`` x cu on odd
    rows: bricks), box-filtered over the ``fu x fw`` footprint (the own and the nearest neighbour cell
    on each axis), so cell borders do not alias."""
    row = np.floor(w / cw)
    lw = (w / cw - row - 0.5) * cw
    own_w = np.clip(np.minimum(lw + fw / 2, cw / 2) - np.maximum(lw - fw / 2, -cw / 2), 0, None) / fw
    out = 0.0
    for r, wr in ((row, own_w), (row + np.where(lw > 0, 1, -1), 1 - own_w)):
        uu = u / cu + np.mod(r, 2) * row_shift
        col = np.floor(uu)
        lu = (uu - col - 0.5) * cu
        own_u = np.clip(np.minimum(lu + fu / 2, cu / 2) - np.maximum(lu - fu / 2, -cu / 2), 0, None) / fu
        nb = col + np.where(lu > 0, 1, -1)
        out = out + wr * (own_u * _hash(col, r, salt) + (1 - own_u) * _hash(nb, r, salt))
    return out


def _ground(scene: Scene, p: list, fp: Footprint) -> np.ndarray:
    """Albedo ``[n, 3]`` of ground hits: road (asphalt, dashed centre line, parking lines, crosswalk),
    sidewalk (0.6 m slabs, seams, curb), terrain (grass with dirt patches)."""
    x, y = p[0], p[1]
    ay = np.abs(y)
    rh = scene.road_half
    sw = np.where(y > 0, scene.sidewalk[1], scene.sidewalk[0]).astype(np.float32)
    zone = (ay >= rh).astype(np.int8) + (ay >= rh + sw)
    out = np.empty((x.size, 3), np.float32)
    for z, fn in ((0, _road), (1, _sidewalk), (2, _grass)):
        sel = np.flatnonzero(zone == z)
        if sel.size:
            out[sel] = fn(scene, x[sel], y[sel], ay[sel], fp[sel])
    return np.clip(out, 0.02, 1)


def _road(scene, x, y, ay, fp):
    rh, fx, fy = scene.road_half, fp.x, fp.y
    g = 0.32 + 0.05 * scene.tiles["fine"].sample(x, y, fp.iso) \
        + 0.04 * scene.tiles["med"].sample(x + 13.0, y + 5.0, fp.iso)
    mark = _box(y, 0.07, fy) * _box(np.mod(x, 9.0) - 1.5, 1.5, fx)
    mark += _box(ay - (rh - 2.2), 0.06, fy)
    for xc in scene.crosswalks:
        mark += _box(x - (xc + 2.0), 2.0, fx) * _box(np.mod(y, 1.0) - 0.5, 0.25, fy) * _box(y, rh - 2.4, fy)
    mark = (np.clip(mark, 0, 1) * 0.9)[:, None]
    return np.stack([g, g, g * 1.03], 1) * (1 - mark) + mark * np.float32(0.85)


def _sidewalk(scene, x, y, ay, fp):
    fx, fy = fp.x, fp.y
    sx, sy = np.mod(x, 0.6) - 0.3, np.mod(y, 0.6) - 0.3
    seam = 1 - (1 - _box(0.3 - np.abs(sx), 0.012, fx)) * (1 - _box(0.3 - np.abs(sy), 0.012, fy))
    tone = _cell_tone(x, y, 0.6, 0.6, fx, fy, 7)
    nf = scene.tiles["fine"].sample(x, y, fp.iso)
    s = 0.56 * (1 + 0.16 * (tone - 0.5) + 0.06 * nf) * (1 - 0.45 * seam)
    if scene.road_half > 0:  # curb stone along the road (campus paths have none)
        curb = _box(ay - scene.road_half - 0.12, 0.12, fy)
        s = s * (1 - curb) + 0.42 * curb
    return np.stack([s, s * 0.97, s * 0.92], 1)


def _grass(scene, x, y, ay, fp):
    nm = scene.tiles["med"].sample(x + 13.0, y + 5.0, fp.iso)
    gr = 0.75 + 0.25 * scene.tiles["leaf"].sample(x + 31.0, y + 17.0, fp.iso) + 0.2 * nm
    dirt = np.clip(0.5 * nm - 0.3, 0, 1)[:, None]
    return np.stack([0.22 * gr, 0.38 * gr, 0.12 * gr], 1) * (1 - dirt) + dirt * np.array([0.40, 0.33, 0.22], np.float32)


def _facade_u(p: list, n: np.ndarray) -> np.ndarray:
    """Horizontal texture coordinate along a vertical face (x on faces normal to y, y otherwise)."""
    return np.where(np.abs(n[:, 0]) > 0.5, p[1], p[0])


def _building(scene, j, p, n, fp):
    """Facade: plaster or brick (0.9 x 0.3 m running bond), window grid with frames; dark flat roof."""
    aux, col, top = scene.aux[j], scene.color[j], scene.hi[j, 2]
    tiles = scene.tiles
    u, z = _facade_u(p, n), p[2]
    fu, fz = fp.facade(n)
    nf = tiles["fine"].sample(u + j * 3.7, z, fp.iso)
    nm = tiles["med"].sample(u + j * 5.3, z, fp.iso)
    wall = col * (1 + 0.10 * nf + 0.08 * nm)[:, None]
    bsel = np.flatnonzero(aux[:, 4] > 0.5)
    if bsel.size:
        zb, ub, fub, fzb = z[bsel], u[bsel], fu[bsel], fz[bsel]
        row = np.floor(zb / 0.3)
        bu = (ub + np.mod(row, 2) * 0.45) / 0.9
        du, dz = (bu - np.floor(bu) - 0.5) * 0.9, np.mod(zb, 0.3) - 0.15
        mortar = (1 - (1 - _box(0.45 - np.abs(du), 0.015, fub)) * (1 - _box(0.15 - np.abs(dz), 0.015, fzb)))[:, None]
        tone = 0.85 + 0.3 * _cell_tone(ub, zb, 0.9, 0.3, fub, fzb, j[bsel], 0.5)
        wall[bsel] = wall[bsel] * tone[:, None] * (1 - mortar) + mortar * np.float32(0.72)
    sx, sz, ww, wh, z0 = aux[:, 0], aux[:, 1], aux[:, 2], aux[:, 3], aux[:, 5]
    cu = u / sx
    ci = np.floor(cu)
    lu = (cu - ci - 0.5) * sx
    fz_ = (z - z0) / sz
    fi = np.floor(fz_)
    lz = (fz_ - fi - 0.5) * sz
    floors = np.floor((top - 0.6 - z0) / sz)          # whole window rows below the roof
    inside = (fi >= 0) & (fi < floors)
    win = _box(lu, ww / 2, fu) * _box(lz, wh / 2, fz) * inside
    frame = np.clip(_box(lu, ww / 2 + 0.1, fu) * _box(lz, wh / 2 + 0.1, fz) * inside - win, 0, 1)
    hv = _hash(ci, fi, j)
    glass = np.stack([0.08 + 0.30 * hv, 0.10 + 0.30 * hv, 0.14 + 0.28 * hv], 1) * (1 + 0.15 * nm)[:, None]
    rgb = wall * (1 - win - frame)[:, None] + glass * win[:, None] + frame[:, None] * np.float32(0.82)
    roof = n[:, 2] > 0.5
    rgb[roof] = (0.30 + 0.04 * nf[roof])[:, None] * np.array([1.0, 0.95, 0.9], np.float32)
    return np.clip(rgb, 0.02, 1)


def _car(scene, j, p, n, fp):
    """Paint, dark cabin glass, wheels on the sides, lamps on the ends."""
    aux, col = scene.aux[j], scene.color[j]
    xc, yc, length, width, cabin = aux[:, 0], aux[:, 1], aux[:, 2], aux[:, 3], aux[:, 4] > 0.5
    nf = scene.tiles["fine"].sample(p[0] + j * 2.1, p[2] + p[1], fp.iso)
    rgb = col * (1 + 0.04 * nf)[:, None]
    side = np.abs(n[:, 1]) > 0.5
    ends = np.abs(n[:, 0]) > 0.5
    glass = cabin & (np.abs(n[:, 2]) < 0.5)
    rgb[glass] = np.array([0.07, 0.08, 0.10], np.float32) + 0.05 * nf[glass, None]
    wheel = np.zeros(j.size, np.float32)
    fw = np.maximum(fp.x, fp.z)
    for sgn in (-1.0, 1.0):
        dist = np.hypot(p[0] - (xc + sgn * 0.32 * length), p[2] - 0.33)
        wheel += np.clip((0.32 - dist) / fw + 0.5, 0, 1)
    wheel = np.clip(wheel, 0, 1) * (side & ~cabin)
    lamp = _box(np.abs(p[1] - yc) - (width / 2 - 0.3), 0.14, fp.y) * _box(p[2] - 0.72, 0.07, fp.z) * (ends & ~cabin)
    rgb = rgb * (1 - wheel - lamp)[:, None] + wheel[:, None] * np.float32(0.05) + \
        lamp[:, None] * np.array([0.95, 0.75, 0.45], np.float32)
    return np.clip(rgb, 0.02, 1)


def _pole(scene, j, p, n, fp):
    nf = scene.tiles["fine"].sample(p[0] + p[1], p[2] * 0.5, fp.iso)
    return np.clip(scene.color[j] * (1 + 0.08 * nf)[:, None], 0.02, 1)


def _light(scene, j, p, n, fp):
    """Traffic light housing with three lamps (red lit) on the face towards -x."""
    aux = scene.aux[j]
    rgb = scene.color[j].copy()
    face = n[:, 0] < -0.5
    fw = np.maximum(fp.y, fp.z)
    for k, colour in enumerate(((0.95, 0.15, 0.1), (0.25, 0.2, 0.05), (0.05, 0.2, 0.08))):
        dist = np.hypot(p[1] - aux[:, 0], p[2] - (aux[:, 1] - 0.3 * k))
        cov = (np.clip((0.1 - dist) / fw + 0.5, 0, 1) * face)[:, None]
        rgb = rgb * (1 - cov) + cov * np.array(colour, np.float32)
    return rgb


def _sign(scene, j, p, n, fp):
    aux = scene.aux[j]
    border = 1 - _box(p[1] - aux[:, 0], 0.24, fp.y) * _box(p[2] - aux[:, 1], 0.24, fp.z)
    return scene.color[j] * (1 - border)[:, None] + border[:, None] * np.float32(0.9)


def _crown(scene, j, p, n, fp):
    c, r = scene.centre[j], scene.radius[j]
    u = np.arctan2(p[1] - c[:, 1], p[0] - c[:, 0]) * r
    nl = scene.tiles["leaf"].sample(u + j * 7.1, p[2], fp.iso)
    nm = scene.tiles["med"].sample(u * 1.7 + j * 3.3, p[2] * 1.7, fp.iso * 1.7)
    return np.clip(scene.color[j] * (0.8 + 0.35 * nl + 0.2 * nm)[:, None], 0.02, 1)


def _trunk(scene, j, p, n, fp):
    c, r = scene.centre[j], scene.radius[j]
    u = np.arctan2(p[1] - c[:, 1], p[0] - c[:, 0]) * r
    nf = scene.tiles["fine"].sample(u * 3.0, p[2] * 0.4, fp.iso * 3.0)
    return np.clip(scene.color[j] * (1 + 0.25 * nf)[:, None], 0.02, 1)


def _hedge(scene, j, p, n, fp):
    u = _facade_u(p, n) + np.where(n[:, 2] > 0.5, p[1] * 0.5, 0)
    nl = scene.tiles["leaf"].sample(u + j * 4.3, p[2], fp.iso)
    nm = scene.tiles["med"].sample(u * 1.3, p[2] * 1.3, fp.iso * 1.3)
    return np.clip(scene.color[j] * (0.8 + 0.35 * nl + 0.2 * nm)[:, None], 0.02, 1)


def _fence(scene, j, p, n, fp):
    """Vertical slats (0.16 m period) between two rails; gaps rendered dark."""
    h = scene.aux[j, 0]
    slat = _box(np.mod(p[0], 0.16) - 0.08, 0.055, fp.x)
    rail = np.clip(_box(p[2] - (h - 0.15), 0.05, fp.z) + _box(p[2] - 0.25, 0.05, fp.z), 0, 1)
    solid = np.clip(slat + rail, 0, 1)
    nf = scene.tiles["fine"].sample(p[0], p[2] * 0.3, fp.iso)
    rgb = scene.color[j] * (1 + 0.1 * nf)[:, None]
    return rgb * (0.3 + 0.7 * solid)[:, None]


_MATERIALS = {M_BUILDING: _building, M_CAR: _car, M_POLE: _pole, M_ARM: _pole, M_LIGHT: _light, M_SIGN: _sign,
              M_CROWN: _crown, M_TRUNK: _trunk, M_HEDGE: _hedge, M_FENCE: _fence}


def _sky(scene: Scene, d: list, pixel_angle: float) -> np.ndarray:
    """Sky colour [n, 3] of directions d (3 arrays [n]): gradient plus soft clouds."""
    norm = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    e = d[2] / norm
    az = np.arctan2(d[1], d[0])
    k = np.clip(e * 3.0, 0, 1)[:, None] ** 0.7
    rgb = np.array([0.80, 0.85, 0.90], np.float32) * (1 - k) + np.array([0.38, 0.56, 0.85], np.float32) * k
    scale = 40.0
    nm = scene.tiles["med"].sample(az * scale, e * scale * 2.0, np.full(e.shape, pixel_angle * scale, np.float32))
    cloud = (np.clip(0.6 * nm - 0.2, 0, 1) * np.clip(e * 6.0, 0, 1))[:, None]
    return rgb * (1 - cloud) + cloud * np.float32(0.95)


# ============================================================================================ rendering

@dataclass
class CameraFrame:
    """One rendered camera: rgb [H, W, 3] uint8, depth [H, W] float32 m (0 = sky), semantic [H, W] uint8."""

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray


def _pixel_dirs(intr: Intrinsics, ss: int) -> np.ndarray:
    """Camera-frame directions (z = 1) [H·ss, W·ss, 3] of the sub-pixel samples (ss = 1: pixel centres)."""
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    u = (np.arange(intr.width)[:, None] + offs[None]).ravel()
    v = (np.arange(intr.height)[:, None] + offs[None]).ravel()
    uu, vv = np.meshgrid(u, v)
    return np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1).astype(np.float32)


def cast_sparse(scene: Scene, rays: Rays, rows: np.ndarray, cols: np.ndarray,
                rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cast` for a 1-D set of rays ``[M]`` sorted by the output-pixel row ``rows`` (``cols``: the
    column); a primitive is tested only on the rays whose pixel lies in its rectangle."""
    dz = rays.d[2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.where(dz < -1e-6, -rays.origin[2] / dz, np.float32(np.inf)).astype(np.float32)
        pid = np.isfinite(t).astype(np.int32)
        for j, r0, r1, c0, c1 in rects:
            a, b = np.searchsorted(rows, (r0, r1))
            if b <= a:
                continue
            cc = cols[a:b]
            sel = a + np.flatnonzero((cc >= c0) & (cc < c1))
            if not sel.size:
                continue
            th = _HIT[scene.kind[j]](scene, j, rays, sel)
            better = th < t[sel]
            hit = sel[better]
            t[hit] = th[better]
            pid[hit] = j + 2
    return t, pid


def edge_pixels(pid: np.ndarray, rects: list[tuple[int, int, int, int, int]], thin: int = 6) -> np.ndarray:
    """Pixels that get supersampled: a 4-neighbour sees another primitive, or the pixel lies in the
    rectangle of a primitive less than ``thin`` pixels wide or high (which centre rays may miss)."""
    e = np.zeros(pid.shape, bool)
    dh = pid[:, 1:] != pid[:, :-1]
    dv = pid[1:] != pid[:-1]
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    e[1:] |= dv
    e[:-1] |= dv
    for j, r0, r1, c0, c1 in rects:
        if c1 - c0 <= thin or r1 - r0 <= thin:
            e[r0:r1, c0:c1] = True
    return e


# reflectance of velodyne returns by train id (arbitrary but plausible, in [0, 1])
REFLECTANCE = np.full(256, 0.3, np.float32)
REFLECTANCE[[ROAD, SIDEWALK, BUILDING, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN, VEGETATION, TERRAIN, CAR]] = \
    [0.18, 0.32, 0.36, 0.28, 0.45, 0.2, 0.9, 0.42, 0.35, 0.5]


class Renderer:
    """Renders the cameras and velodyne scans of one scene (ray templates cached)."""

    def __init__(self, scene: Scene, intr: Intrinsics, ss: int):
        self.scene, self.intr, self.ss = scene, intr, ss
        self.dirs_c = _pixel_dirs(intr, 1)
        offs = (np.arange(ss) + 0.5) / ss - 0.5
        self.sub = np.stack(np.meshgrid(offs, offs), -1).reshape(-1, 2).astype(np.float32)  # [ss², (du, dv)]
        self.corners = _corners(scene)
        self.velo_el, _, self.velo_dirs = _velo_grid()

    def camera(self, T_world_cam: np.ndarray) -> CameraFrame:
        """Render camera pose ``T_world_cam`` [4, 4]: colour anti-aliased with ``ss``² samples on edge
        pixels (texture prefiltered by footprint everywhere), depth and classes of the pixel centres."""
        scene, intr, ss = self.scene, self.intr, self.ss
        R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
        rects = camera_rects(scene, self.corners, np.linalg.inv(T_world_cam), intr)
        rays = Rays.make(o, R, self.dirs_c)
        t, pid = cast(scene, rays, rects)
        semantic = classes(scene, rays, t, pid)
        depth = np.where(pid > 0, t, 0).astype(np.float32)
        angle = TEXTURE_BLUR / intr.fx  # textures prefiltered at this footprint (radians) everywhere
        rgb = shade(scene, rays, t, pid, angle).reshape(intr.height, intr.width, 3)
        if ss > 1:
            er, ec = np.nonzero(edge_pixels(pid, rects))
            if er.size:
                u = (ec[:, None] + self.sub[None, :, 0]).ravel()
                v = (er[:, None] + self.sub[None, :, 1]).ravel()
                local = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
                sub_rays = Rays.make(o, R, local.astype(np.float32))
                rows, cols = np.repeat(er, ss * ss), np.repeat(ec, ss * ss)
                ts, pids = cast_sparse(scene, sub_rays, rows, cols, rects)
                sub_rgb = shade(scene, sub_rays, ts, pids, angle)
                rgb[er, ec] = sub_rgb.reshape(er.size, ss * ss, 3).mean(1)
        rgb8 = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return CameraFrame(rgb8, depth, semantic)

    def velodyne(self, T_world_velo: np.ndarray) -> np.ndarray:
        """64-beam scan ``float32 [M, 4]`` (x, y, z in the velodyne frame, reflectance in [0, 1]); rays
        without a hit within VELO_MAX_RANGE (sky) return nothing; only the forward half when
        VELO_FORWARD_ONLY."""
        scene = self.scene
        rects = velo_rects(scene, self.corners, T_world_velo, self.velo_el)
        rays = Rays.make(T_world_velo[:3, 3], T_world_velo[:3, :3], self.velo_dirs)
        t, pid = cast(scene, rays, rects)
        A = VELO_AZIMUTHS
        first = t[:, :A] <= t[:, A:]
        t1 = np.where(first, t[:, :A], t[:, A:])
        pid1 = np.where(first, pid[:, :A], pid[:, A:])
        keep = (pid1 > 0) & (t1 <= VELO_MAX_RANGE)
        if VELO_FORWARD_ONLY:
            keep &= self.velo_dirs[:, :A, 0] >= 0
        pid1 = np.where(keep, pid1, 0)
        rays1 = Rays.make(T_world_velo[:3, 3], T_world_velo[:3, :3], self.velo_dirs[:, :A])
        refl = REFLECTANCE[classes(scene, rays1, t1, pid1)]
        local = self.velo_dirs[:, :A] * t1[..., None]
        return np.concatenate([local[keep], refl[keep][:, None]], 1).astype(np.float32)


# ============================================================================================ drives

def _drive_seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 7331]))


def _depth_png(depth: np.ndarray) -> np.ndarray:
    ok = (depth > 0) & (depth <= MAX_DEPTH_PNG)
    return np.where(ok, np.round(depth * 256.0), 0).astype(np.uint16)


def generate_drive(cfg: SyntheticConfig, index: int, root: Path, progress: bool = True) -> dict:
    """Render and write drive ``index`` (1-based). Returns ``{"drive", "frames", "stationary"}``."""
    rng = _drive_seed(cfg.seed, index)
    intr = kitti_intrinsics(cfg.image_width, cfg.image_height)
    n = cfg.frames_per_drive
    road_half = rng.uniform(4.8, 5.6)
    traj = make_trajectory(rng, n, lane_y=-(road_half - 2.2) / 2)
    stop_x = float(traj.x[traj.stationary[0]])
    scene = make_scene(rng, float(traj.x.min()) - 130.0, float(traj.x.max()) + 200.0, stop_x, road_half)
    renderer = Renderer(scene, intr, cfg.supersample)
    name = drive_name(index)
    ddir = Path(root) / DATE / name
    gdir = gt_dir(root, name)
    start = 12 * 3600 + 600.0 * index
    poses = []
    for i in tqdm(range(n), desc=name, unit="frame", disable=not progress, leave=False):
        for cam in (2, 3):
            T = traj.T_world_cam(i, cam)
            if cam == 2:
                poses.append(T[:3].ravel())
            frame = renderer.camera(T)
            _atomic_png(ddir / f"image_0{cam}" / "data" / f"{i:010d}.png", frame.rgb)
            _atomic_png(gdir / f"depth_0{cam}" / f"{i:010d}.png", _depth_png(frame.depth))
            _atomic_png(gdir / f"semantic_0{cam}" / f"{i:010d}.png", frame.semantic)
        scan = renderer.velodyne(traj.T_world_velo(i))
        atomic_write_bytes(ddir / "velodyne_points" / "data" / f"{i:010d}.bin", scan.tobytes())
        atomic_write_text(ddir / "oxts" / "data" / f"{i:010d}.txt", _oxts_line(oxts_packet(traj, i)))
    for cam in (2, 3):
        atomic_write_text(ddir / f"image_0{cam}" / "timestamps.txt", _timestamps(start, n))
    atomic_write_text(ddir / "oxts" / "timestamps.txt", _timestamps(start, n, 0.002))
    atomic_write_text(ddir / "oxts" / "dataformat.txt", OXTS_DATAFORMAT)
    atomic_write_text(ddir / "velodyne_points" / "timestamps.txt", _timestamps(start, n, -0.01))
    atomic_write_text(ddir / "velodyne_points" / "timestamps_start.txt", _timestamps(start, n, -0.06))
    atomic_write_text(ddir / "velodyne_points" / "timestamps_end.txt", _timestamps(start, n, 0.04))
    atomic_write_text(gdir / "poses.txt", "".join(" ".join(f"{v:.12e}" for v in row) + "\n" for row in poses))
    atomic_write_text(gdir / "stationary.txt", "".join(f"{i}\n" for i in traj.stationary))
    return {"drive": f"{DATE}/{name}", "frames": n, "stationary": int(traj.stationary.size),
            "moving": [int(i) for i in range(1, n - 1) if traj.speed[i] > 0]}


def write_calibration(cfg: SyntheticConfig, root: Path) -> Path:
    """Write the three calibration files of the generated rig to ``<root>/2030_01_01``; returns that folder."""
    folder = Path(root) / DATE
    for fname, text in calib_texts(kitti_intrinsics(cfg.image_width, cfg.image_height)).items():
        atomic_write_text(folder / fname, text)
    return folder


def drive_roles(cfg: SyntheticConfig) -> list[tuple[int, str]]:
    """(drive index, train|val|test) of every generated drive."""
    roles = ["train"] * cfg.train_drives + ["val"] * cfg.val_drives + ["test"] * cfg.test_drives
    return [(k + 1, r) for k, r in enumerate(roles)]


def params_key(cfg: SyntheticConfig) -> str:
    return params_hash({"v": GENERATOR_VERSION, **dataclasses.asdict(cfg)})


def _write_splits(cfg: SyntheticConfig, splits_dir: Path, drives: list[dict], roles: list[tuple[int, str]]) -> None:
    atomic_write_text(Path(splits_dir) / "synthetic_drives.txt",
                 "".join(f"{d['drive']} {role}\n" for d, (_, role) in zip(drives, roles)))
    lines = []
    for d, (_, role) in zip(drives, roles):
        if role != "test":
            continue
        moving = d["moving"]
        k = min(cfg.test_frames_per_drive, len(moving))
        pick = [moving[int(round(q))] for q in np.linspace(0, len(moving) - 1, k)] if k else []
        lines += [f"{d['drive']} {f} l\n" for f in sorted(set(pick))]
    atomic_write_text(Path(splits_dir) / "synth_eigen" / "test_files.txt", "".join(lines))


def generate_mini_kitti(cfg: SyntheticConfig, root: Path, splits_dir: Path, progress: bool = True) -> dict:
    """Generate (or reuse) the mini-KITTI of ``cfg`` under ``root`` and its split files in ``splits_dir``.

    Returns a summary: drives (list of ``<date>/<drive>``), roles, frames (total), stationary (per drive),
    seconds, reused. A previous output is reused only when ``<root>/synthetic_gt/manifest.json`` (written
    last) carries the same params hash; otherwise the generator's own folders (``<root>/2030_01_01``,
    ``<root>/synthetic_gt``) are deleted and rewritten.
    """
    root, splits_dir = Path(root), Path(splits_dir)
    manifest = root / "synthetic_gt" / "manifest.json"
    key = params_key(cfg)
    roles = drive_roles(cfg)
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("key") == key:
            _write_splits(cfg, splits_dir, old["drive_info"], roles)
            return {**old["summary"], "reused": True}
        manifest.unlink()
    for owned in (root / DATE, root / "synthetic_gt"):
        if owned.exists():
            shutil.rmtree(owned)
    t0 = time.perf_counter()
    write_calibration(cfg, root)
    drives = []
    for index, role in tqdm(roles, desc="mini-KITTI", unit="drive", disable=not progress):
        drives.append(generate_drive(cfg, index, root, progress))
    _write_splits(cfg, splits_dir, drives, roles)
    summary = {"drives": [d["drive"] for d in drives], "roles": [r for _, r in roles],
               "frames": sum(d["frames"] for d in drives),
               "stationary": {d["drive"]: d["stationary"] for d in drives},
               "seconds": round(time.perf_counter() - t0, 2), "reused": False}
    atomic_write_text(manifest, json.dumps({"key": key, "params": dataclasses.asdict(cfg), "version": GENERATOR_VERSION,
                                       "summary": summary, "drive_info": drives}, indent=1) + "\n")
    return summary


# ============================================================================================ Make3D

MAKE3D_SIZE = (2272, 1704)      # Test134 images decode to 2272 rows x 1704 columns (portrait)
MAKE3D_GRID = (55, 305)         # Position3DGrid rows (along image rows) x columns (along image columns)
MAKE3D_RENDER = (568, 426)      # rendered size (rows, cols), upsampled x4 to MAKE3D_SIZE
MAKE3D_HFOV_DEG = 60.0
MAKE3D_NO_RETURN = 81.0         # m: range written where the ray hits nothing (beyond the 70 m mask)


def make_campus_scene(rng: np.random.Generator) -> Scene:
    """Cross-domain scene: a paved path (sidewalk zone) through lawns with scattered trees, hedges,
    lamp posts and a few large buildings; no road, markings or cars."""
    b = _Builder()
    path_half = rng.uniform(0.8, 2.0)
    for _ in range(int(rng.integers(3, 7))):
        sgn = rng.choice([-1.0, 1.0])
        x0, y0 = rng.uniform(12.0, 70.0), rng.uniform(8.0, 30.0)
        ya, yb = _yspan(sgn, y0, y0 + rng.uniform(8.0, 20.0))
        sx, sz = rng.uniform(2.4, 4.0), rng.uniform(3.0, 3.8)
        aux = (sx, sz, sx * rng.uniform(0.4, 0.7), sz * rng.uniform(0.4, 0.6), float(rng.random() < 0.5),
               rng.uniform(0.5, 1.2))
        b.add(BOX, (x0, ya, 0.0), (x0 + rng.uniform(10.0, 40.0), yb, rng.uniform(6.0, 18.0)), BUILDING, M_BUILDING,
              FACADES[rng.integers(len(FACADES))] * rng.uniform(0.85, 1.1), aux)
    for _ in range(int(rng.integers(12, 30))):
        x, y = rng.uniform(3.0, 80.0), rng.choice([-1.0, 1.0]) * rng.uniform(path_half + 1.5, 25.0)
        r, h, R = rng.uniform(0.15, 0.3), rng.uniform(2.0, 4.0), rng.uniform(1.5, 3.5)
        b.add(CYLINDER, (x - r, y - r, 0.0), (x + r, y + r, h + 0.3), VEGETATION, M_TRUNK,
              np.array((0.32, 0.24, 0.16)) * rng.uniform(0.8, 1.2))
        zc = h + 0.5 * R + 0.3
        b.add(SPHERE, (x - R, y - R, zc - R), (x + R, y + R, zc + R), VEGETATION, M_CROWN,
              np.array((0.17, 0.31, 0.10)) * rng.uniform(0.8, 1.25))
    for _ in range(int(rng.integers(0, 4))):
        x, y = rng.uniform(4.0, 40.0), rng.choice([-1.0, 1.0]) * rng.uniform(path_half + 0.5, 6.0)
        b.add(BOX, (x, y - 0.5, 0.0), (x + rng.uniform(3.0, 12.0), y + 0.5, rng.uniform(0.6, 1.3)), VEGETATION,
              M_HEDGE, np.array((0.16, 0.30, 0.10)) * rng.uniform(0.8, 1.2))
    for x in np.arange(rng.uniform(5.0, 15.0), 90.0, rng.uniform(15.0, 25.0)):
        y = path_half + 0.4
        b.add(CYLINDER, (x - 0.06, y - 0.06, 0.0), (x + 0.06, y + 0.06, rng.uniform(3.0, 4.5)), POLE, M_POLE,
              (0.25, 0.25, 0.27))
    sun_az, sun_el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(25), np.radians(65))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)], np.float32)
    tiles = {"fine": NoiseTile(rng, 0.02, 0.8), "med": NoiseTile(rng, 0.1, 1.0), "leaf": NoiseTile(rng, 0.03, 0.5)}
    return Scene(**b.arrays(), road_half=0.0, sidewalk=(path_half, path_half), crosswalks=[], sun=sun, tiles=tiles)


def make3d_intrinsics() -> Intrinsics:
    """Square-pixel pinhole of the rendered Make3D-style image (MAKE3D_RENDER, MAKE3D_HFOV_DEG)."""
    h, w = MAKE3D_RENDER
    f = (w / 2) / math.tan(math.radians(MAKE3D_HFOV_DEG) / 2)
    return Intrinsics(w, h, f, f, w / 2, h / 2)


def make3d_grid(scene: Scene, T_world_cam: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """``Position3DGrid`` ``[55, 305, 4]``: camera-frame point (x right, y down, z forward, m) and, in
    channel 3, the range along the ray (m) at a 55 x 305 grid of pixel-cell centres spanning the image
    (grid row r <-> image row, grid column c <-> image column); no hit -> MAKE3D_NO_RETURN."""
    gr, gc = MAKE3D_GRID
    v = (np.arange(gr) + 0.5) * intr.height / gr - 0.5
    u = (np.arange(gc) + 0.5) * intr.width / gc - 0.5
    uu, vv = np.meshgrid(u, v)
    local = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1).reshape(-1, 3)
    rays = Rays.make(T_world_cam[:3, 3], T_world_cam[:3, :3], local.astype(np.float32))
    rects = camera_rects(scene, _corners(scene), np.linalg.inv(T_world_cam), intr)
    rows = np.clip(np.round(vv.ravel()), 0, intr.height - 1).astype(np.int64)
    cols = np.clip(np.round(uu.ravel()), 0, intr.width - 1).astype(np.int64)
    t, pid = cast_sparse(scene, rays, rows, cols, rects)
    norm = np.linalg.norm(local, axis=1)
    rng_m = np.where(pid > 0, t * norm, MAKE3D_NO_RETURN)
    point = local / norm[:, None] * rng_m[:, None]
    return np.concatenate([point, rng_m[:, None]], 1).reshape(gr, gc, 4).astype(np.float64)


def generate_make3d(cfg: SyntheticConfig, out_dir: Path, progress: bool = False) -> dict:
    """Write ``cfg.make3d_images`` campus-style test images in the Make3D Test134 format to ``out_dir``:
    ``img-campusNNN.jpg`` (1704 x 2272 portrait, rendered at 426 x 568 and upsampled) and
    ``depth_sph_corr-campusNNN.mat`` (``Position3DGrid`` [55, 305, 4], range in channel 3; SPEC §4.4).
    Returns ``{"images", "seconds"}``."""
    import io

    import scipy.io

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    intr = make3d_intrinsics()
    R0 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # cam (x right, y down, z fwd) -> world
    for k in tqdm(range(cfg.make3d_images), desc="make3d", unit="image", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 10_000 + k, 7331]))
        scene = make_campus_scene(rng)
        yaw, pitch = rng.uniform(-0.35, 0.35), rng.uniform(-0.05, 0.02)
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
        Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])   # positive pitch: nose down
        T = _transform(Rz @ Ry @ R0, [0.0, rng.uniform(-0.3, 0.3), rng.uniform(1.5, 1.8)])
        frame = Renderer(scene, intr, 2).camera(T)
        big = cv2.resize(frame.rgb, (MAKE3D_SIZE[1], MAKE3D_SIZE[0]), interpolation=cv2.INTER_CUBIC)
        ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(big[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"{out_dir}: JPEG encoding of Make3D image {k} failed")
        name = f"campus{k:03d}"
        buf = io.BytesIO()
        scipy.io.savemat(buf, {"Position3DGrid": make3d_grid(scene, T, intr)})
        atomic_write_bytes(out_dir / f"depth_sph_corr-{name}.mat", buf.getvalue())
        atomic_write_bytes(out_dir / f"img-{name}.jpg", jpg.tobytes())
    return {"images": cfg.make3d_images, "seconds": round(time.perf_counter() - t0, 2)}
