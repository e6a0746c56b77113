"""The camera rig, calibration files, trajectories and OXTS packets of the generated drives (KITTI conventions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


GENERATOR_VERSION = 1   # bump for a change the code hash below would not see (none so far)
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


def generator_code() -> dict[str, str]:
    """``{path: MD5}`` of the generator's sources (every module of ``psdif/data/synthetic``): recorded with what
    it wrote, so that an edit of any of them regenerates the data (``writer.params_key``, ``campus``)."""
    from pathlib import Path

    from psdif.io import md5_file

    here = Path(__file__).resolve().parent
    return {f"psdif/data/synthetic/{p.name}": md5_file(p) for p in sorted(here.glob("*.py"))}


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


# ============================================================================================ rig

def make_transform(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


# velodyne (x fwd, y left, z up) -> cam (x right, y down, z fwd)
R_CAM_VELO = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
T_CAM0_VELO = make_transform(R_CAM_VELO, [0.0, -0.08, -0.27])      # calib_velo_to_cam.txt
T_VELO_IMU = make_transform(np.eye(3), [-0.81, 0.32, -0.80])      # calib_imu_to_velo.txt


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
    """Monodepth2's normalised KITTI K (0.58, 1.92, 0.5, 0.5) scaled to ``width x height`` (design.md §4.2)."""
    return Intrinsics(width, height, 0.58 * width, 1.92 * height, 0.5 * width, 0.5 * height)


def T_cam_imu(cam: int) -> np.ndarray:
    """``[4, 4]`` IMU -> rectified camera ``cam`` (0, 2 or 3) transform of the generated rig."""
    shift = make_transform(np.eye(3), [CAM_TX.get(cam, 0.0), 0.0, 0.0])
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
        return make_transform(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]), [self.x[i], self.y[i], IMU_HEIGHT])

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


def oxts_line(p: np.ndarray) -> str:
    head = [f"{p[0]:.15g}", f"{p[1]:.15g}"] + [f"{v:.14g}" for v in p[2:25]]
    return " ".join(head + [str(int(v)) for v in p[25:]]) + "\n"


def timestamps_text(start: float, n: int, offset: float = 0.0) -> str:
    """KITTI timestamps (``2030-01-01 12:00:00.000000000``) of ``n`` frames every DT seconds."""
    lines = []
    for i in range(n):
        ns = int(round((start + offset + i * DT) * 1e9))
        sec, frac = divmod(ns, 10**9)
        h, rem = divmod(sec, 3600)
        lines.append(f"2030-01-01 {h:02d}:{rem // 60:02d}:{rem % 60:02d}.{frac:09d}")
    return "\n".join(lines) + "\n"
