"""Street scenes: analytic primitives (boxes, spheres, cylinders), their materials and procedural textures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# Cityscapes train ids (design.md §4.5)
ROAD, SIDEWALK, BUILDING, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, CAR = 8, 9, 10, 13

BOX, SPHERE, CYLINDER = 0, 1, 2
(M_BUILDING, M_CAR, M_POLE, M_ARM, M_LIGHT, M_SIGN, M_CROWN, M_TRUNK, M_HEDGE, M_FENCE) = range(10)
M_GROUND, M_SKY = 10, 11
MAT_KIND = {M_BUILDING: BOX, M_CAR: BOX, M_POLE: CYLINDER, M_ARM: BOX, M_LIGHT: BOX, M_SIGN: BOX, M_CROWN: SPHERE,
            M_TRUNK: CYLINDER, M_HEDGE: BOX, M_FENCE: BOX}

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


def box_filter(d: np.ndarray, hw, fp: np.ndarray) -> np.ndarray:
    """Coverage of the interval ``[-hw, hw]`` by a box filter of width ``fp`` centred at offset ``d``."""
    return np.clip(np.minimum(d + fp * 0.5, hw) - np.maximum(d - fp * 0.5, -hw), 0, None) / fp


def cell_hash(a: np.ndarray, b: np.ndarray, c) -> np.ndarray:
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


class SceneBuilder:
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
    b = SceneBuilder()
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


def yspan(sgn, y0, y1):
    return (min(sgn * y0, sgn * y1), max(sgn * y0, sgn * y1))


def _add_buildings(b, rng, sgn, y_front, x_min, x_max):
    x = x_min
    while x < x_max:
        length = rng.uniform(8.0, 26.0)
        y0 = y_front + rng.uniform(0.0, 0.8)
        ya, yb = yspan(sgn, y0, y0 + rng.uniform(8.0, 14.0))
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
                ya, yb = yspan(sgn, y_out + 0.05, y_out + 0.10)
                h = rng.uniform(1.0, 1.5)
                color = (0.45, 0.33, 0.22) if rng.random() < 0.5 else (0.55, 0.56, 0.58)
                b.add(BOX, (x, ya, 0.0), (x + length, yb, h), FENCE, M_FENCE, color, (h,))
            else:
                ya, yb = yspan(sgn, y_out + 0.1, y_out + 0.1 + min(1.0, setback * 0.5))
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
        ya, yb = yspan(sgn, y_pole - 1.4, y_pole)
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
