"""Rendering one frame: camera images with selective supersampling, dense depth, labels and velodyne scans."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psdif.data.synthetic.raycast import Rays, HIT_FUNCTIONS, box_corners, velo_grid, camera_rects, cast, velo_rects
from psdif.data.synthetic.rig import Intrinsics, VELO_AZIMUTHS, VELO_FORWARD_ONLY, VELO_MAX_RANGE
from psdif.data.synthetic.scene import (BUILDING, CAR, FENCE, POLE, ROAD, SIDEWALK, Scene, TERRAIN, TRAFFIC_LIGHT,
                                        TRAFFIC_SIGN, VEGETATION)
from psdif.data.synthetic.shading import TEXTURE_BLUR, classes, shade


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
            th = HIT_FUNCTIONS[scene.kind[j]](scene, j, rays, sel)
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
        self.corners = box_corners(scene)
        self.velo_el, _, self.velo_dirs = velo_grid()

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
