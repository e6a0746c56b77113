"""Ray casting: analytic ray-primitive intersections over screen-space or velodyne-grid rectangles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from psdif.data.synthetic.rig import Intrinsics, VELO_AZIMUTHS, VELO_BEAMS, VELO_ELEV_DEG, VELO_MAX_RANGE
from psdif.data.synthetic.scene import BOX, CYLINDER, SPHERE, Scene


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


HIT_FUNCTIONS = {BOX: _hit_box, SPHERE: _hit_sphere, CYLINDER: _hit_cylinder}


def cast(scene: Scene, rays: Rays, rects: list[tuple[int, int, int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray: ``t`` [R, C] float32 (inf = sky) and ``pid`` [R, C] int32 (0 sky,
    1 ground, j + 2 primitive j). ``rects``: (j, r0, r1, c0, c1) blocks of rays primitive j can hit."""
    dz = rays.d[2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = np.where(dz < -1e-6, -rays.origin[2] / dz, np.float32(np.inf)).astype(np.float32)
        pid = np.isfinite(t).astype(np.int32)
        for j, r0, r1, c0, c1 in rects:
            sl = (slice(r0, r1), slice(c0, c1))
            th = HIT_FUNCTIONS[scene.kind[j]](scene, j, rays, sl)
            tb = t[sl]
            better = th < tb
            np.copyto(tb, th, where=better)
            pid[sl][better] = j + 2
    return t, pid


_CORNER_BITS = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], bool)
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def box_corners(scene: Scene) -> np.ndarray:
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


def velo_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
