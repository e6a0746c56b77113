"""The Make3D-format cross-domain test set: campus scenes with laser-grid depth."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
from pathlib import Path
from psdif.process import progress_bar

from psdif.config import SyntheticConfig
from psdif.data.synthetic.raycast import Rays, box_corners, camera_rects
from psdif.data.synthetic.render import Renderer, cast_sparse
from psdif.data.synthetic import rig
from psdif.data.synthetic.rig import GENERATOR_VERSION, Intrinsics, make_transform
from psdif.data.synthetic.scene import (BOX, BUILDING, CYLINDER, FACADES, M_BUILDING, M_CROWN, M_HEDGE, M_POLE,
                                        M_TRUNK, NoiseTile, POLE, SPHERE, Scene, VEGETATION, SceneBuilder, yspan)
from psdif.io import atomic_write_bytes


# ============================================================================================ Make3D

MAKE3D_SIZE = (2272, 1704)      # Test134 images decode to 2272 rows x 1704 columns (portrait)
MAKE3D_GRID = (55, 305)         # Position3DGrid rows (along image rows) x columns (along image columns)
MAKE3D_RENDER = (568, 426)      # rendered size (rows, cols), upsampled x4 to MAKE3D_SIZE
MAKE3D_HFOV_DEG = 60.0
MAKE3D_NO_RETURN = 81.0         # m: range written where the ray hits nothing (beyond the 70 m mask)
# the .mat header's text (116 bytes): fixed, where scipy writes the platform and the time of writing, so that
# a .mat is a pure function of its content
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by the psdif synthetic generator".ljust(116, b" ")


def mat_bytes(arrays: dict) -> bytes:
    """A MATLAB 5 ``.mat`` file of ``arrays`` (``scipy.io.savemat``) with the fixed header text MAT_HEADER:
    the same arrays give the same bytes on every run and machine."""
    import io

    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays)
    data = buf.getvalue()
    assert data.startswith(b"MATLAB 5.0 MAT-file"), data[:40]
    return MAT_HEADER + data[len(MAT_HEADER):]


def make_campus_scene(rng: np.random.Generator) -> Scene:
    """Cross-domain scene: a paved path (sidewalk zone) through lawns with scattered trees, hedges,
    lamp posts and a few large buildings; no road, markings or cars."""
    b = SceneBuilder()
    path_half = rng.uniform(0.8, 2.0)
    for _ in range(int(rng.integers(3, 7))):
        sgn = rng.choice([-1.0, 1.0])
        x0, y0 = rng.uniform(12.0, 70.0), rng.uniform(8.0, 30.0)
        ya, yb = yspan(sgn, y0, y0 + rng.uniform(8.0, 20.0))
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
    rects = camera_rects(scene, box_corners(scene), np.linalg.inv(T_world_cam), intr)
    rows = np.clip(np.round(vv.ravel()), 0, intr.height - 1).astype(np.int64)
    cols = np.clip(np.round(uu.ravel()), 0, intr.width - 1).astype(np.int64)
    t, pid = cast_sparse(scene, rays, rows, cols, rects)
    norm = np.linalg.norm(local, axis=1)
    rng_m = np.where(pid > 0, t * norm, MAKE3D_NO_RETURN)
    point = local / norm[:, None] * rng_m[:, None]
    return np.concatenate([point, rng_m[:, None]], 1).reshape(gr, gc, 4).astype(np.float64)


def _why_regenerate(old_text: str, record: dict) -> str:
    """What differs between the stamp text of an earlier output and ``record`` (this run's)."""
    import json

    try:
        old = json.loads(old_text)
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return "its stamp is unreadable"
    why = []
    for k, v in record.items():
        if old.get(k) == v:
            continue
        if k != "code":
            why.append(f"{k}: {old.get(k)!r} -> {v!r}")
        elif isinstance(old.get(k), dict):
            changed = sorted(f for f in v.keys() | old[k].keys() if v.get(f) != old[k].get(f))
            why.append(f"the generator's code changed ({', '.join(changed)})")
        else:
            why.append("its stamp holds no hash of the generator's code")
    return "; ".join(why)


def generate_make3d(cfg: SyntheticConfig, out_dir: Path, progress: bool = False) -> dict:
    """Write ``cfg.make3d_images`` campus-style test images in the Make3D Test134 format to ``out_dir``:
    ``img-campusNNN.jpg`` (1704 x 2272 portrait, rendered at 426 x 568 and upsampled) and
    ``depth_sph_corr-campusNNN.mat`` (``Position3DGrid`` [55, 305, 4], range in channel 3; design.md §4.4).
    Returns ``{"images", "seconds", "reused"}``. Every file is a pure function of the params and the code (no
    time of writing anywhere: :func:`mat_bytes`). A complete earlier output of the same params and generator
    code (stamped in ``out_dir/.config``, written last) is reused; otherwise all is written again, saying why
    when an earlier output of other params or code is replaced."""
    import json

    out_dir = Path(out_dir)
    record = {"v": GENERATOR_VERSION, "seed": int(cfg.seed), "images": cfg.make3d_images,
              "code": rig.generator_code()}
    stamp, key = out_dir / ".config", json.dumps(record, sort_keys=True)
    names = [f"campus{k:03d}" for k in range(cfg.make3d_images)]
    files = [out_dir / f"{prefix}{n}{ext}" for n in names
             for prefix, ext in (("img-", ".jpg"), ("depth_sph_corr-", ".mat"))]
    if stamp.is_file() and stamp.read_text() == key and all(f.is_file() for f in files):
        return {"images": cfg.make3d_images, "seconds": 0.0, "reused": True}
    if stamp.is_file() and stamp.read_text() != key:
        print(f"{out_dir}: regenerating the Make3D-format set: {_why_regenerate(stamp.read_text(), record)}",
              flush=True)
    stamp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    intr = make3d_intrinsics()
    R0 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # cam (x right, y down, z fwd) -> world
    for k in progress_bar(range(cfg.make3d_images), desc="make3d", unit="image", disable=not progress):
        rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), 10_000 + k, 7331]))
        scene = make_campus_scene(rng)
        yaw, pitch = rng.uniform(-0.35, 0.35), rng.uniform(-0.05, 0.02)
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
        Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])   # positive pitch: nose down
        T = make_transform(Rz @ Ry @ R0, [0.0, rng.uniform(-0.3, 0.3), rng.uniform(1.5, 1.8)])
        frame = Renderer(scene, intr, 2).camera(T)
        big = cv2.resize(frame.rgb, (MAKE3D_SIZE[1], MAKE3D_SIZE[0]), interpolation=cv2.INTER_CUBIC)
        ok, jpg = cv2.imencode(".jpg", np.ascontiguousarray(big[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"{out_dir}: JPEG encoding of Make3D image {k} failed")
        name = f"campus{k:03d}"
        grid = make3d_grid(scene, T, intr)
        atomic_write_bytes(out_dir / f"depth_sph_corr-{name}.mat", mat_bytes({"Position3DGrid": grid}))
        atomic_write_bytes(out_dir / f"img-{name}.jpg", jpg.tobytes())
    atomic_write_bytes(stamp, key.encode())
    return {"images": cfg.make3d_images, "seconds": round(time.perf_counter() - t0, 2), "reused": False}
