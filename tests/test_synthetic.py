"""The mini-KITTI generator against independent references: the real KITTI layout (kitti-mini), the
KITTI GT code (psdif.data.kitti.generate_depth_map), a true-pose photometric warp written here from the
files on disk (OXTS + calibration, bilinear, align_corners=True semantics, Monodepth2 SSIM), and its own
stationary/determinism contracts."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psdif.data.images import read_image
from psdif.data import kitti
from psdif.data import synthetic as syn
from psdif.config import default_params

os.environ.setdefault("OMP_NUM_THREADS", "1")

TRAIN_IDS = set(range(19))


def tiny_config(**kw):
    base = dict(image_width=160, image_height=48, train_drives=1, val_drives=1, test_drives=1,
                frames_per_drive=40, test_frames_per_drive=4, supersample=2, make3d_images=2)
    base.update(kw)
    return dataclasses.replace(default_params().synthetic, **base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A generated tiny mini-KITTI: (config, root, splits_dir, summary)."""
    root = tmp_path_factory.mktemp("synth")
    cfg = tiny_config()
    summary = syn.generate_mini_kitti(cfg, root / "raw", root / "splits", progress=False)
    return cfg, root / "raw", root / "splits", summary


@pytest.fixture(scope="module")
def full_res_drive(tmp_path_factory):
    """One drive at the embedded preset's resolution and supersampling (frames cut to 30)."""
    root = tmp_path_factory.mktemp("synth_full")
    cfg = dataclasses.replace(default_params().synthetic, frames_per_drive=30)
    syn.write_calibration(cfg, root)
    syn.generate_drive(cfg, 1, root, progress=False)
    return cfg, root


def _drive(root: Path, index: int = 1) -> tuple[str, Path]:
    name = syn.drive_name(index)
    return f"{syn.DATE}/{name}", root / syn.DATE / name


def _pattern(rel: str) -> str:
    return re.sub(r"\d{10}", "N" * 10, rel)


def _tree(folder: Path) -> set[str]:
    return {_pattern(str(p.relative_to(folder))) for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------------- layout

def test_layout_matches_real_kitti(tiny, kitti_mini):
    cfg, root, _, _ = tiny
    real_date = kitti_mini / "2011_09_26"
    real_drive = real_date / "2011_09_26_drive_0001_sync"
    folder, drive = _drive(root)
    assert _tree(drive) == _tree(real_drive)
    assert {p.name for p in (root / syn.DATE).glob("calib_*.txt")} == {p.name for p in real_date.glob("calib_*.txt")}
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        ours, real = kitti.read_calib_file(root / syn.DATE / name), kitti.read_calib_file(real_date / name)
        assert set(ours) == set(real), name
        assert all(ours[k].size == real[k].size for k in real), name
    cal = kitti.read_calib_file(root / syn.DATE / "calib_cam_to_cam.txt")
    np.testing.assert_array_equal(cal["S_rect_02"], [cfg.image_width, cfg.image_height])
    P2, P3 = cal["P_rect_02"].reshape(3, 4), cal["P_rect_03"].reshape(3, 4)
    baseline = (P2[0, 3] - P3[0, 3]) / P2[0, 0]
    assert baseline == pytest.approx(0.54, abs=1e-6)
    np.testing.assert_allclose(P2[:, :3], [[0.58 * 160, 0, 80], [0, 1.92 * 48, 24], [0, 0, 1]], rtol=1e-6)

    n = cfg.frames_per_drive
    assert (drive / "oxts" / "dataformat.txt").read_text().split() == \
        (real_drive / "oxts" / "dataformat.txt").read_text().split()
    for sensor in ("image_02", "image_03", "oxts", "velodyne_points"):
        stamps = kitti.read_timestamps(drive / sensor / "timestamps.txt")
        assert stamps.size == n
        np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-6)
    for i in range(n):
        assert kitti.read_oxts(drive / "oxts" / "data" / f"{i:010d}.txt").size == 30
        img = read_image(drive / "image_02" / "data" / f"{i:010d}.png")
        assert img.shape == (cfg.image_height, cfg.image_width, 3) and img.dtype == np.uint8
        scan = kitti.read_velodyne(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
        assert scan.shape[0] > 20000
        rng = np.linalg.norm(scan[:, :3], axis=1)
        assert rng.max() <= syn.VELO_MAX_RANGE + 1e-3 and 0 <= scan[:, 3].min() and scan[:, 3].max() <= 1
        elev = np.degrees(np.arcsin(scan[:, 2] / rng))
        assert elev.max() <= 2.0 + 1e-3 and elev.min() >= -24.8 - 1e-3


def test_semantics_and_depth_pngs(tiny):
    _, root, _, _ = tiny
    gt = syn.gt_dir(root, syn.drive_name(1))
    seen = set()
    for i in (0, 8, 15):
        sem = read_image(gt / "semantic_02" / f"{i:010d}.png")[..., 0]
        depth = kitti.read_depth_png(gt / "depth_02" / f"{i:010d}.png")
        seen |= set(np.unique(sem).tolist())
        assert set(np.unique(sem).tolist()) <= TRAIN_IDS
        np.testing.assert_array_equal(depth == 0, sem == syn.SKY)  # sky <=> no depth (street < 255 m)
        # ground pixels: depth = h·fy/(v - cy) for the flat road seen from 1.65 m (cam2 height)
        v = np.arange(sem.shape[0], dtype=np.float64)[:, None].repeat(sem.shape[1], 1)
        road = (sem == syn.ROAD) & (v > 24 + 3)
        expected = syn.CAM_HEIGHT * (1.92 * 48) / (v[road] - 24)
        np.testing.assert_allclose(depth[road], expected, rtol=2e-3, atol=2 / 256)
    assert {syn.ROAD, syn.SIDEWALK, syn.BUILDING, syn.SKY, syn.VEGETATION, syn.POLE} <= seen


# ----------------------------------------------------------------------------------------------- velodyne GT

def _smooth_depth(depth: np.ndarray, tol: float) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood has valid depth varying by at most ``tol`` (relative)."""
    pad = np.pad(depth, 1, mode="edge")
    win = np.stack([pad[a:a + depth.shape[0], b:b + depth.shape[1]] for a in range(3) for b in range(3)])
    return (win.min(0) > 0) & (win.max(0) <= (1 + tol) * win.min(0))


def _velodyne_vs_dense(root: Path, cam: int, frames) -> np.ndarray:
    """Relative errors between KITTI GT from the scans and the dense GT at the projected pixels.

    generate_depth_map puts a point projected at coordinate x in column round(x) - 1 (KITTI's 1-based
    legacy); the generator renders pixel centres at integer coordinates, so GT pixel (v, u) belongs to
    dense pixel (v + 1, u + 1). Pixels next to a depth discontinuity (> 5 % in the 3 x 3 window) are left
    out: a point rounded to the neighbouring pixel centre legitimately differs there."""
    folder, drive = _drive(root)
    gt = syn.gt_dir(root, syn.drive_name(1))
    errs = []
    for i in frames:
        scan = drive / "velodyne_points" / "data" / f"{i:010d}.bin"
        sparse = kitti.generate_depth_map(root / syn.DATE, scan, cam=cam)
        dense = kitti.read_depth_png(gt / f"depth_0{cam}" / f"{i:010d}.png")
        smooth = _smooth_depth(dense, 0.05)
        v, u = np.nonzero(sparse[:-1, :-1] > 0)
        ok = smooth[v + 1, u + 1]
        errs.append(np.abs(sparse[v, u][ok] - dense[v + 1, u + 1][ok]) / dense[v + 1, u + 1][ok])
    return np.concatenate(errs)


@pytest.mark.parametrize("cam", [2, 3])
def test_velodyne_gt_matches_dense_depth(tiny, cam):
    """Median relative error of the KITTI GT against the generator's dense depth: measured ~0.4 % at
    160 x 48, ~0.2 % at 448 x 136."""
    _, root, _, _ = tiny
    err = _velodyne_vs_dense(root, cam, range(0, 40, 5))
    assert err.size > 300
    assert np.median(err) < 0.01, np.median(err)
    assert np.mean(err < 0.05) > 0.9


def test_velodyne_gt_full_resolution(full_res_drive):
    _, root = full_res_drive
    err = _velodyne_vs_dense(root, 2, range(0, 30, 4))
    assert err.size > 3000
    assert np.median(err) < 0.01, np.median(err)


# ----------------------------------------------------------------------------------------------- poses

def _oxts_poses(drive: Path, n: int) -> np.ndarray:
    """T_world_imu [n, 4, 4] from OXTS with the KITTI devkit's Mercator convention (scale of frame 0)."""
    er = 6378137.0
    packets = [kitti.read_oxts(drive / "oxts" / "data" / f"{i:010d}.txt") for i in range(n)]
    scale = math.cos(math.radians(packets[0][0]))
    out = []
    for p in packets:
        lat, lon, alt, roll, pitch, yaw = p[:6]
        t = [scale * lon * math.pi * er / 180, scale * er * math.log(math.tan((90 + lat) * math.pi / 360)), alt]
        cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
        cy, sy = math.cos(yaw), math.sin(yaw)
        Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = Rz @ Ry @ Rx, t
        out.append(T)
    return np.stack(out)


def _T_cam_imu(calib_dir: Path, cam: int) -> np.ndarray:
    cc = kitti.read_camera_calib(calib_dir, cam)
    shift = np.eye(4)
    shift[0, 3] = cc.P_rect[0, 3] / cc.P_rect[0, 0]
    return shift @ cc.R_rect_00 @ kitti.velo_to_cam_matrix(calib_dir) @ kitti.imu_to_velo_matrix(calib_dir)


def _cam_poses(root: Path, index: int, n: int, cam: int = 2) -> np.ndarray:
    """T_world_cam [n, 4, 4] from the written OXTS and calibration only."""
    _, drive = _drive(root, index)
    return _oxts_poses(drive, n) @ np.linalg.inv(_T_cam_imu(root / syn.DATE, cam))


def test_oxts_poses_match_poses_txt(tiny):
    cfg, root, _, _ = tiny
    n = cfg.frames_per_drive
    ours = _cam_poses(root, 1, n)
    rows = np.loadtxt(syn.gt_dir(root, syn.drive_name(1)) / "poses.txt").reshape(n, 3, 4)
    txt = np.concatenate([rows, np.tile([[[0, 0, 0, 1.0]]], (n, 1, 1))], 1)
    for i in range(n - 1):  # relative motion agrees to < 1 mm / 1e-6 rad
        a = np.linalg.inv(ours[i]) @ ours[i + 1]
        b = np.linalg.inv(txt[i]) @ txt[i + 1]
        np.testing.assert_allclose(a[:3, 3], b[:3, 3], atol=1e-3)
        np.testing.assert_allclose(a[:3, :3], b[:3, :3], atol=1e-6)
    # speed field vs. displacement: trapezoid of consecutive speeds x 0.1 s
    _, drive = _drive(root)
    v = np.array([kitti.read_oxts(drive / "oxts" / "data" / f"{i:010d}.txt")[8] for i in range(n)])
    step = np.linalg.norm(np.diff(txt[:, :3, 3], axis=0), axis=1)
    np.testing.assert_allclose(step, (v[1:] + v[:-1]) * 0.05, rtol=2e-3, atol=1e-6)


def test_stationary_frames(tiny):
    cfg, root, _, summary = tiny
    for index in (1, 2, 3):
        folder, drive = _drive(root, index)
        n = cfg.frames_per_drive
        stationary = [int(x) for x in (syn.gt_dir(root, syn.drive_name(index)) / "stationary.txt").read_text().split()]
        assert len(stationary) >= 3 and summary["stationary"][folder] == len(stationary)
        speed = np.array([kitti.oxts_speed(kitti.read_oxts(kitti.oxts_path(root, folder, i))) for i in range(n)])
        assert [i for i in range(n) if speed[i] == 0.0] == stationary
        assert speed[speed > 0].min() >= syn.V_CREEP - 1e-9  # filter.min_speed below it separates them exactly
        assert default_params().filter.min_speed < syn.V_CREEP
        poses = _cam_poses(root, index, n)
        for i in range(n - 1):
            same = np.array_equal(poses[i], poses[i + 1])
            assert same == (i in stationary and i + 1 in stationary), i
        a, b = stationary[0], stationary[-1]
        img = [read_image(drive / "image_02" / "data" / f"{i:010d}.png") for i in (a, b, b + 1)]
        assert np.array_equal(img[0], img[1]) and not np.array_equal(img[1], img[2])


def test_split_files(tiny):
    cfg, root, splits, summary = tiny
    roles = dict(line.split() for line in (splits / "synthetic_drives.txt").read_text().splitlines())
    assert sorted(roles.values()) == ["test", "train", "val"] and set(roles) == set(summary["drives"])
    test = kitti.read_split(splits / "synth_eigen" / "test_files.txt")
    assert len(test) == cfg.test_frames_per_drive
    for ref in test:
        assert roles[ref.folder] == "test" and ref.side == "l" and 1 <= ref.frame <= cfg.frames_per_drive - 2
        packet = kitti.read_oxts(kitti.oxts_path(root, ref.folder, ref.frame))
        assert kitti.oxts_speed(packet) > 0
        assert kitti.image_path(root, ref).exists()


# ----------------------------------------------------------------------------------------------- warp

def _pe(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """design.md §2 photometric error [B, 1, H, W]: 0.85·clamp((1 − SSIM)/2, 0, 1) + 0.15·L1 (colour mean)."""
    def pool(x):
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1)
    mu_a, mu_b = pool(a), pool(b)
    var_a, var_b = pool(a * a) - mu_a ** 2, pool(b * b) - mu_b ** 2
    cov = pool(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    dssim = torch.clamp((1 - ssim) / 2, 0, 1)
    return (0.85 * dssim + 0.15 * (a - b).abs()).mean(1, keepdim=True)


def _warp_ratio(root: Path, cfg, index: int = 1, min_speed: float = 3.0) -> float:
    """mean pe(I_t, I_{t+1} warped with true depth_t and the OXTS pose) / mean pe(I_t, I_{t+1}) over
    non-sky, in-view, non-occluded pixels (depth of t+1 at the target within 3 %) away from depth
    discontinuities (silhouette pixels mix two surfaces: 3 x 3 depth range <= 10 %), mask eroded by 1."""
    n = cfg.frames_per_drive
    folder, drive = _drive(root, index)
    gt = syn.gt_dir(root, syn.drive_name(index))
    K = kitti.read_camera_calib(root / syn.DATE, 2).K
    poses = _cam_poses(root, index, n)
    speed = [kitti.read_oxts(drive / "oxts" / "data" / f"{i:010d}.txt")[8] for i in range(n)]
    H, W = cfg.image_height, cfg.image_width
    vv, uu = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    rays = np.linalg.inv(K) @ np.stack([uu.ravel(), vv.ravel(), np.ones(H * W)])
    warp_sum = id_sum = 0.0
    for t in range(n - 1):
        if min(speed[t], speed[t + 1]) < min_speed:
            continue
        img_t, img_s = (torch.from_numpy(read_image(drive / "image_02" / "data" / f"{i:010d}.png").copy())
                        .permute(2, 0, 1).float()[None] / 255 for i in (t, t + 1))
        d_t = kitti.read_depth_png(gt / "depth_02" / f"{t:010d}.png").astype(np.float64)
        d_s = kitti.read_depth_png(gt / "depth_02" / f"{t + 1:010d}.png").astype(np.float64)
        T = np.linalg.inv(poses[t + 1]) @ poses[t]  # cam_t -> cam_{t+1}
        X = T[:3, :3] @ (rays * d_t.ravel()) + T[:3, 3:4]
        z = X[2]
        u, v = K[0, 0] * X[0] / z + K[0, 2], K[1, 1] * X[1] / z + K[1, 2]
        grid = torch.from_numpy(np.stack([2 * u / (W - 1) - 1, 2 * v / (H - 1) - 1], -1).reshape(1, H, W, 2)).float()
        warped = F.grid_sample(img_s, grid, mode="bilinear", padding_mode="border", align_corners=True)
        ui, vi = np.round(u).astype(int), np.round(v).astype(int)
        inside = _smooth_depth(d_t, 0.1).ravel() & (z > 0.1) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
        seen = np.zeros(H * W, bool)
        seen[inside] = np.abs(d_s[vi[inside], ui[inside]] - z[inside]) < 0.03 * z[inside]
        mask = torch.from_numpy(seen.reshape(1, 1, H, W)).float()
        mask = -F.max_pool2d(-mask, 3, 1, 1)  # erode: SSIM windows away from occlusions
        pe_w, pe_i = _pe(warped, img_t), _pe(img_s, img_t)
        warp_sum += float((pe_w * mask).sum())
        id_sum += float((pe_i * mask).sum())
    assert id_sum > 0, "no moving frame pairs"
    return warp_sum / id_sum


def test_true_pose_warp_reproduces_frame(tiny):
    """Tiny 160 x 48, pairs at >= 3 m/s: measured ratio 0.10 (0.13 including 1-3 m/s pairs)."""
    cfg, root, _, _ = tiny
    ratio = _warp_ratio(root, cfg)
    assert ratio < 0.2, ratio


def test_true_pose_warp_full_resolution(full_res_drive):
    """448 x 136, supersample 2 (the embedded preset), pairs at >= 3 m/s: measured ratio 0.095."""
    cfg, root = full_res_drive
    ratio = _warp_ratio(root, cfg)
    assert ratio < 0.2, ratio


# ----------------------------------------------------------------------------------------------- determinism

def test_deterministic_and_drives_differ(tiny, tmp_path):
    cfg, root, _, _ = tiny
    syn.write_calibration(cfg, tmp_path)
    syn.generate_drive(cfg, 2, tmp_path, progress=False)
    for base in (root / syn.DATE / syn.drive_name(2), syn.gt_dir(root, syn.drive_name(2))):
        rel = base.relative_to(root)
        files = sorted(p.relative_to(base) for p in base.rglob("*") if p.is_file())
        assert files
        for f in files:
            assert (tmp_path / rel / f).read_bytes() == (base / f).read_bytes(), f
    _, d1 = _drive(root, 1)
    _, d2 = _drive(root, 2)
    a = read_image(d1 / "image_02" / "data" / "0000000000.png").astype(int)
    b = read_image(d2 / "image_02" / "data" / "0000000000.png").astype(int)
    assert np.abs(a - b).mean() > 10


def test_reuse_needs_matching_manifest(tiny):
    cfg, root, splits, _ = tiny
    again = syn.generate_mini_kitti(cfg, root, splits, progress=False)
    assert again["reused"] and again["frames"] == 3 * cfg.frames_per_drive
    assert syn.params_key(cfg) != syn.params_key(dataclasses.replace(cfg, seed=cfg.seed + 1))


# ----------------------------------------------------------------------------------------------- Make3D

def test_make3d_format_and_geometry(tmp_path):
    """Real Test134 layout (read back by psdif.data.make3d); grid rows run along image rows: the top row
    sees sky (no return), the bottom centre sees the ground at camera height (1.5-1.8 m) below."""
    import scipy.io

    from psdif.data import make3d

    cfg = tiny_config(make3d_images=2)
    assert syn.generate_make3d(cfg, tmp_path)["reused"] is False
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert syn.generate_make3d(cfg, tmp_path)["reused"] is True          # same params: kept as they are
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert names == ["depth_sph_corr-campus000.mat", "depth_sph_corr-campus001.mat",
                     "img-campus000.jpg", "img-campus001.jpg"]
    samples = make3d.load_make3d_test(tmp_path)
    assert len(samples) == 2
    for s in samples:
        assert s.image.shape == (852, 1704, 3)   # the 2:1 centre crop of a 2272 x 1704 portrait image
        grid = scipy.io.loadmat(s.depth_path)["Position3DGrid"]
        assert grid.shape == (55, 305, 4)
        np.testing.assert_allclose(np.linalg.norm(grid[..., :3], axis=-1), grid[..., 3], rtol=1e-6)
        assert (grid[0, :, 3] == syn.MAKE3D_NO_RETURN).mean() > 0.5          # sky on top
        band = grid[17:38, :, 3]
        assert 0 < band.min() and (band < 70).mean() > 0.2                    # evaluable centre band
        x, y, z = grid[54, 152, :3]                                          # camera frame, y down
        height = y                                  # the ground point's drop below the camera (m)
        assert 1.2 < height < 2.2 and z > 0


def test_download_stage_restores_a_corrupted_generated_frame_bit_identical(tmp_path, monkeypatch):
    """The download stage runs on every `dvc repro`: it checks the generated files against the generator's
    record (content hashes) and regenerates exactly the drives that differ; the manifest comes out
    byte-identical, so nothing downstream reruns."""
    import importlib.util

    import yaml

    raw = _tiny_project(tmp_path, monkeypatch)
    spec = importlib.util.spec_from_file_location("download_stage",
                                                  Path(__file__).resolve().parents[1] / "stages/download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main([])
    manifest = (tmp_path / "data/manifests/raw.json").read_bytes()
    root = tmp_path / "data/kitti_raw"
    png = root / syn.DATE / syn.drive_name(2) / "image_02" / "data" / "0000000003.png"
    scan = root / syn.DATE / syn.drive_name(3) / "velodyne_points" / "data" / "0000000001.bin"
    original_png, original_scan = png.read_bytes(), scan.read_bytes()
    untouched = root / syn.DATE / syn.drive_name(1) / "image_02" / "data" / "0000000003.png"
    stamp = untouched.stat().st_mtime_ns

    png.write_bytes(original_png[: len(original_png) // 2])     # a truncated frame
    scan.unlink()                                               # and a lost scan of another drive
    stage.main([])
    assert png.read_bytes() == original_png and scan.read_bytes() == original_scan
    assert untouched.stat().st_mtime_ns == stamp                # the intact drive was not rewritten
    assert (tmp_path / "data/manifests/raw.json").read_bytes() == manifest

    calib = root / syn.DATE / "calib_cam_to_cam.txt"
    original_calib = calib.read_text()
    calib.write_text(original_calib.replace("P_rect_02", "P_rect_0X"))
    (root / "synthetic_gt" / "stray.txt").write_text("not the generator's")
    stage.main([])
    assert calib.read_text() == original_calib and not (root / "synthetic_gt" / "stray.txt").exists()
    assert untouched.stat().st_mtime_ns == stamp
    assert (tmp_path / "data/manifests/raw.json").read_bytes() == manifest


# ----------------------------------------------------------------------------------------------- pure function

def _tiny_project(tmp_path: Path, monkeypatch, make3d_images: int = 0) -> dict:
    """params.yaml of a tiny generated mini-KITTI (three 8-frame drives at 96 x 64) in ``tmp_path``, the working
    folder from now on; returns the params as written."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "psdif/presets/embedded.yaml").read_text())
    raw["synthetic"].update(image_width=96, image_height=64, train_drives=1, val_drives=1, test_drives=1,
                            frames_per_drive=8, test_frames_per_drive=2, supersample=1, make3d_images=make3d_images)
    raw["data"].update(height=64, width=64)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    return raw


def _stage_download():
    import importlib.util

    spec = importlib.util.spec_from_file_location("download_stage",
                                                  Path(__file__).resolve().parents[1] / "stages/download.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def _all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generated_files_are_byte_identical_across_runs(tmp_path):
    """Every file the generator writes (frames, GT, lists, records, Make3D .jpg/.mat) is a pure function of the
    params and the code: two runs a second apart, in two folders, give the same bytes (a .mat header written
    by scipy holds the time of writing; the generator writes a fixed one)."""
    import time

    cfg = tiny_config(image_width=96, image_height=64, frames_per_drive=8, test_frames_per_drive=2, supersample=1,
                      make3d_images=1)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        syn.generate_mini_kitti(cfg, out / "raw", out / "splits", progress=False)
        syn.generate_make3d(cfg, out / "make3d")
        runs.append(_all_bytes(out))
        time.sleep(1.1)  # the second run in another second of the clock
    assert any(k.endswith(".mat") for k in runs[0]) and any(k.endswith(".png") for k in runs[0])
    assert runs[0].keys() == runs[1].keys()
    assert [k for k in runs[0] if runs[0][k] != runs[1][k]] == []
    mat = next(v for k, v in runs[0].items() if k.endswith(".mat"))
    assert b"Created on" not in mat[:128] and str(time.gmtime().tm_year).encode() not in mat[:128]


def test_download_stage_regenerates_on_a_code_change_and_its_manifest_is_stable(tmp_path, monkeypatch, capsys):
    """raw.json is a pure function of the params and the code: a deleted Make3D .mat comes back byte-identical
    and so does raw.json; the record holds a hash of the generator's code, so an edit of the generator
    (simulated: its recorded hash differs) regenerates everything, saying why."""
    import yaml

    from psdif.data.synthetic import rig

    raw = _tiny_project(tmp_path, monkeypatch, make3d_images=1)
    stage = _stage_download()
    stage.main([])
    manifest = (tmp_path / "data/manifests/raw.json").read_bytes()
    mat = tmp_path / "data/make3d_synth/depth_sph_corr-campus000.mat"
    mat_bytes = mat.read_bytes()
    assert '"make3d_synth"' in manifest.decode() and mat.name in manifest.decode()

    mat.unlink()
    time.sleep(1.1)
    stage.main([])
    assert mat.read_bytes() == mat_bytes
    assert (tmp_path / "data/manifests/raw.json").read_bytes() == manifest
    capsys.readouterr()

    png = tmp_path / "data/kitti_raw" / syn.DATE / syn.drive_name(1) / "image_02" / "data" / "0000000003.png"
    stamp = png.stat().st_mtime_ns
    code = rig.generator_code()
    assert set(code) == {f"psdif/data/synthetic/{p.name}"
                         for p in (Path(__file__).resolve().parents[1] / "psdif/data/synthetic").glob("*.py")}
    edited = {**code, "psdif/data/synthetic/shading.py": "0" * 32}
    monkeypatch.setattr(rig, "generator_code", lambda: edited)
    stage.main([])
    out = capsys.readouterr().out
    assert "regenerating the mini-KITTI: the generator's code changed (psdif/data/synthetic/shading.py)" in out
    assert "regenerating the Make3D-format set: the generator's code changed (psdif/data/synthetic/shading.py)" in out
    assert png.stat().st_mtime_ns != stamp                                 # written again
    assert (tmp_path / "data/manifests/raw.json").read_bytes() == manifest  # to the same bytes
    stamp = png.stat().st_mtime_ns
    stage.main([])                                                         # the same code again: reused
    assert "regenerating" not in capsys.readouterr().out and png.stat().st_mtime_ns == stamp


def test_an_edited_generated_split_list_is_refused_not_reverted(tmp_path, monkeypatch):
    """A line deleted from a generated list: the download stage stops with one error line naming the file and
    how to keep (another split name) or discard (delete) the edit; following either advice works."""
    import shutil

    import yaml

    raw = _tiny_project(tmp_path, monkeypatch)
    stage = _stage_download()
    stage.main([])
    lst = Path(raw["data"]["splits_dir"]) / raw["data"]["train_split"] / "train_files.txt"
    generated = lst.read_text()
    mine = "".join(generated.splitlines(keepends=True)[1:])  # one line deleted
    lst.write_text(mine)

    with pytest.raises(SystemExit) as err:
        stage.main([])
    msg = str(err.value)
    assert msg.startswith(f"error: {lst}: ") and "\n" not in msg
    assert f"data.train_split: my_{raw['data']['train_split']}" in msg and f"delete {lst}" in msg
    assert lst.read_text() == mine                                        # not reverted

    # keep it: the advised move to another split name; the generator writes its own list again
    kept = lst.parent.with_name(f"my_{raw['data']['train_split']}")
    shutil.move(lst.parent, kept)
    raw["data"]["train_split"] = kept.name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    stage.main([])
    assert (kept / "train_files.txt").read_text() == mine and lst.read_text() == generated

    # discard it: delete the file
    test_list = Path(raw["data"]["splits_dir"]) / raw["data"]["test_split"] / "test_files.txt"
    original = test_list.read_text()
    test_list.write_text(original + original.splitlines(keepends=True)[0])
    with pytest.raises(SystemExit) as err:
        stage.main([])
    assert str(err.value).startswith(f"error: {test_list}: ") and "data.test_split" in str(err.value)
    test_list.unlink()
    stage.main([])
    assert test_list.read_text() == original
