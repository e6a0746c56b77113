"""Shading: anti-aliased (prefiltered) textures and semantic classes of every surface hit."""

from __future__ import annotations

import numpy as np

from psdif.data.synthetic.raycast import Rays
from psdif.data.synthetic.scene import (BOX, MAT_KIND, M_ARM, M_BUILDING, M_CAR, M_CROWN, M_FENCE, M_GROUND, M_HEDGE,
                                        M_LIGHT, M_POLE, M_SIGN, M_SKY, M_TRUNK, ROAD, SIDEWALK, SKY, SPHERE, Scene,
                                        TERRAIN, box_filter, cell_hash)


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
        out = out + wr * (own_u * cell_hash(col, r, salt) + (1 - own_u) * cell_hash(nb, r, salt))
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
    mark = box_filter(y, 0.07, fy) * box_filter(np.mod(x, 9.0) - 1.5, 1.5, fx)
    mark += box_filter(ay - (rh - 2.2), 0.06, fy)
    for xc in scene.crosswalks:
        mark += box_filter(x - (xc + 2.0), 2.0, fx) * box_filter(np.mod(y, 1.0) - 0.5, 0.25, fy) * box_filter(y, rh - 2.4, fy)
    mark = (np.clip(mark, 0, 1) * 0.9)[:, None]
    return np.stack([g, g, g * 1.03], 1) * (1 - mark) + mark * np.float32(0.85)


def _sidewalk(scene, x, y, ay, fp):
    fx, fy = fp.x, fp.y
    sx, sy = np.mod(x, 0.6) - 0.3, np.mod(y, 0.6) - 0.3
    seam = 1 - (1 - box_filter(0.3 - np.abs(sx), 0.012, fx)) * (1 - box_filter(0.3 - np.abs(sy), 0.012, fy))
    tone = _cell_tone(x, y, 0.6, 0.6, fx, fy, 7)
    nf = scene.tiles["fine"].sample(x, y, fp.iso)
    s = 0.56 * (1 + 0.16 * (tone - 0.5) + 0.06 * nf) * (1 - 0.45 * seam)
    if scene.road_half > 0:  # curb stone along the road (campus paths have none)
        curb = box_filter(ay - scene.road_half - 0.12, 0.12, fy)
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
        mortar = (1 - (1 - box_filter(0.45 - np.abs(du), 0.015, fub)) * (1 - box_filter(0.15 - np.abs(dz), 0.015, fzb)))[:, None]
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
    win = box_filter(lu, ww / 2, fu) * box_filter(lz, wh / 2, fz) * inside
    frame = np.clip(box_filter(lu, ww / 2 + 0.1, fu) * box_filter(lz, wh / 2 + 0.1, fz) * inside - win, 0, 1)
    hv = cell_hash(ci, fi, j)
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
    lamp = box_filter(np.abs(p[1] - yc) - (width / 2 - 0.3), 0.14, fp.y) * box_filter(p[2] - 0.72, 0.07, fp.z) * (ends & ~cabin)
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
    border = 1 - box_filter(p[1] - aux[:, 0], 0.24, fp.y) * box_filter(p[2] - aux[:, 1], 0.24, fp.z)
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
    slat = box_filter(np.mod(p[0], 0.16) - 0.08, 0.055, fp.x)
    rail = np.clip(box_filter(p[2] - (h - 0.15), 0.05, fp.z) + box_filter(p[2] - 0.25, 0.05, fp.z), 0, 1)
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
