"""Writing drives in the KITTI raw layout, the split lists and the generator's ground truth."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time

import cv2
import numpy as np
from pathlib import Path
from psdif.process import progress_bar

from psdif.config import SyntheticConfig
from psdif.data.synthetic import rig
from psdif.data.synthetic.render import Renderer
from psdif.data.synthetic.rig import (DATE, GENERATOR_VERSION, MAX_DEPTH_PNG, OXTS_DATAFORMAT, oxts_line,
                                      timestamps_text, calib_texts, kitti_intrinsics, make_trajectory, oxts_packet)
from psdif.data.synthetic.scene import make_scene
from psdif.io import atomic_write_bytes, atomic_write_text, md5_file, params_hash


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
    for i in progress_bar(range(n), desc=name, unit="frame", disable=not progress, leave=False):
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
        atomic_write_text(ddir / "oxts" / "data" / f"{i:010d}.txt", oxts_line(oxts_packet(traj, i)))
    for cam in (2, 3):
        atomic_write_text(ddir / f"image_0{cam}" / "timestamps.txt", timestamps_text(start, n))
    atomic_write_text(ddir / "oxts" / "timestamps.txt", timestamps_text(start, n, 0.002))
    atomic_write_text(ddir / "oxts" / "dataformat.txt", OXTS_DATAFORMAT)
    atomic_write_text(ddir / "velodyne_points" / "timestamps.txt", timestamps_text(start, n, -0.01))
    atomic_write_text(ddir / "velodyne_points" / "timestamps_start.txt", timestamps_text(start, n, -0.06))
    atomic_write_text(ddir / "velodyne_points" / "timestamps_end.txt", timestamps_text(start, n, 0.04))
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
    """What the generated files are a function of: the generator's version, its params and its code."""
    return params_hash({"v": GENERATOR_VERSION, **dataclasses.asdict(cfg), "code": rig.generator_code()})


def _why_regenerate(old: dict, cfg: SyntheticConfig) -> str:
    """Why the record ``old`` (manifest.json) does not describe what ``cfg`` and this code generate."""
    if not old:
        return "its record is unreadable"
    why = []
    if old.get("version") != GENERATOR_VERSION:
        why.append(f"generator version {old.get('version')} -> {GENERATOR_VERSION}")
    new, before = dataclasses.asdict(cfg), old.get("params") or {}
    why += [f"synthetic.{k}: {before.get(k)!r} -> {new[k]!r}" for k in new if before.get(k) != new[k]]
    code, old_code = rig.generator_code(), old.get("code")
    if old_code is None:
        why.append("the record holds no hash of the generator's code")
    elif old_code != code:
        changed = sorted(k for k in code.keys() | old_code.keys() if code.get(k) != old_code.get(k))
        why.append(f"the generator's code changed ({', '.join(changed)})")
    return "; ".join(why) or "its record is incomplete"


# ============================================================================================ split lists

LISTS_RECORD = ".synthetic_lists.json"   # in splits_dir: MD5 of each list the generator wrote there


class EditedListError(RuntimeError):
    """A generated split list differs from what the generator wrote: the message names it and what to do."""


def _md5_text(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def _lists_record(splits_dir: Path) -> dict[str, str]:
    try:
        record = json.loads((Path(splits_dir) / LISTS_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _edited_list_error(splits_dir: Path, rel: str) -> EditedListError:
    path = Path(splits_dir) / rel
    if rel.endswith("_files.txt"):
        split, role = Path(rel).parent.name, rel.rsplit("/", 1)[-1].split("_")[0]
        key = "data.test_split" if role == "test" else "data.train_split"
        mine = Path(splits_dir) / f"my_{split}"
        keep = (f"to keep the edit, move the folder {path.parent} to another split name (e.g. {mine}) and set "
                f"{key}: my_{split}")
    else:
        keep = "it describes the generated drives: change the synthetic params instead"
    return EditedListError(f"{path}: differs from the list the generator wrote there (edited by hand?); the "
                           f"download stage does not overwrite it. {keep[0].upper() + keep[1:]}; to discard the "
                           f"edit, delete {path} and run `dvc repro` again")


def check_lists(splits_dir: Path, texts: dict[str, str] | None = None) -> None:
    """Refuse (:class:`EditedListError`) a list under ``splits_dir`` that differs from what the generator
    wrote there last (its record) and, given ``texts`` ({relative path: text}), from what it would write now."""
    record = _lists_record(splits_dir)
    for rel in sorted(texts if texts is not None else record):
        path = Path(splits_dir) / rel
        if not path.is_file():
            continue
        have = md5_file(path)
        if have == record.get(rel) or (texts is not None and have == _md5_text(texts[rel])):
            continue
        raise _edited_list_error(splits_dir, rel)


def _write_splits(cfg: SyntheticConfig, splits_dir: Path, drives: list[dict], roles: list[tuple[int, str]]) -> None:
    """Write the split lists (``synthetic_drives.txt``, ``synth_eigen/``, ``synth_zhou/``) and their record;
    a list edited since the generator wrote it is refused, never silently reverted (:func:`check_lists`)."""
    texts = {"synthetic_drives.txt": "".join(f"{d['drive']} {role}\n" for d, (_, role) in zip(drives, roles))}
    lines = []
    for d, (_, role) in zip(drives, roles):
        if role != "test":
            continue
        moving = d["moving"]
        k = min(cfg.test_frames_per_drive, len(moving))
        pick = [moving[int(round(q))] for q in np.linspace(0, len(moving) - 1, k)] if k else []
        lines += [f"{d['drive']} {f} l\n" for f in sorted(set(pick))]
    texts["synth_eigen/test_files.txt"] = "".join(lines)
    # the generated set's "published" training lists: every frame with both neighbours, both cameras, static
    # frames included (the filter stage removes those, as Zhou et al. did for eigen_zhou)
    for role in ("train", "val"):
        listed = [f"{d['drive']} {i} {side}\n" for d, (_, r) in zip(drives, roles) if r == role
                  for i in range(1, d["frames"] - 1) for side in ("l", "r")]
        texts[f"synth_zhou/{role}_files.txt"] = "".join(listed)
    check_lists(splits_dir, texts)
    for rel, text in texts.items():
        path = Path(splits_dir) / rel
        if not (path.is_file() and path.read_text() == text):  # an unchanged list is left untouched
            atomic_write_text(path, text)
    record = {rel: _md5_text(text) for rel, text in sorted(texts.items())}
    if _lists_record(splits_dir) != record:
        atomic_write_text(Path(splits_dir) / LISTS_RECORD, json.dumps(record, indent=1) + "\n")


def _owned_files(root: Path, parts: list[Path] | None = None) -> dict[str, str]:
    """MD5 of every file the generator owns (``<root>/2030_01_01``, ``<root>/synthetic_gt``; the manifest
    itself excluded), or of the files under ``parts`` only; paths relative to ``root``."""
    out = {}
    for base in parts if parts is not None else [root / DATE, root / "synthetic_gt"]:
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."):
                    out[str(p.relative_to(root))] = md5_file(p)
    return out


def _damaged_drives(root: Path, record: dict[str, str], names: list[str]) -> tuple[list[str], bool]:
    """(drives whose files differ from ``record`` or are missing / extra, whether anything else differs)."""
    current = _owned_files(root)
    differ = {k for k in record.keys() | current.keys() if record.get(k) != current.get(k)}
    drives = [n for n in names if any(f"/{n}/" in f"/{k}" for k in differ)]
    rest = any(not any(f"/{n}/" in f"/{k}" for n in names) for k in differ)
    return drives, rest


def generate_mini_kitti(cfg: SyntheticConfig, root: Path, splits_dir: Path, progress: bool = True) -> dict:
    """Generate (or reuse) the mini-KITTI of ``cfg`` under ``root`` and its split files in ``splits_dir``.

    Returns a summary: drives (list of ``<date>/<drive>``), roles, frames (total), stationary (per drive),
    files (the generator's record: path -> MD5 of every file it wrote), seconds, reused, repaired. A previous
    output is reused when ``<root>/synthetic_gt/manifest.json`` (written last) carries the same params hash
    and the files on disk are the ones it recorded (content hashes): a drive with a file missing, changed or
    added is generated again (bit-identical: the generator is deterministic), and so is the calibration;
    other params, other generator code (the hash of ``psdif/data/synthetic/*.py`` is part of the params hash,
    ``rig.generator_code``), or a manifest without a record, regenerate everything, saying why (the
    generator's own folders ``<root>/2030_01_01`` and ``<root>/synthetic_gt`` are deleted first). The split
    lists are written when absent or as the generator left them (``<splits_dir>/.synthetic_lists.json``
    records their MD5s); an edited one is refused (:class:`EditedListError`), never silently reverted.
    """
    root, splits_dir = Path(root), Path(splits_dir)
    check_lists(splits_dir)  # an edited list stops the run before anything is generated
    manifest = root / "synthetic_gt" / "manifest.json"
    key = params_key(cfg)
    roles = drive_roles(cfg)
    names = [drive_name(i) for i, _ in roles]
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("key") == key and isinstance(old.get("files"), dict):
            t0 = time.perf_counter()
            damaged, rest = _damaged_drives(root, old["files"], names)
            if rest:
                write_calibration(cfg, root)
                _remove_unrecorded(root, old["files"], names)
            for name in damaged:
                index = names.index(name) + 1
                for folder in (root / DATE / name, gt_dir(root, name)):
                    shutil.rmtree(folder, ignore_errors=True)
                generate_drive(cfg, index, root, progress)
            if damaged or rest:
                again = _owned_files(root)
                if again != old["files"]:
                    raise RuntimeError(f"{root}: regenerated files differ from the generator's record "
                                       f"{manifest}; delete {root} and run the download stage again")
                print(f"{root}: restored {', '.join(damaged) or 'the calibration'} from the generator "
                      f"({time.perf_counter() - t0:.0f} s)")
            _write_splits(cfg, splits_dir, old["drive_info"], roles)
            return {**old["summary"], "files": old["files"], "reused": True, "repaired": damaged}
        print(f"{root}: regenerating the mini-KITTI: {_why_regenerate(old, cfg)}", flush=True)
        manifest.unlink()
    elif (root / DATE).exists() or (root / "synthetic_gt").exists():
        print(f"{root}: regenerating the mini-KITTI: no record of what the generator wrote ({manifest})", flush=True)
    for owned in (root / DATE, root / "synthetic_gt"):
        if owned.exists():
            shutil.rmtree(owned)
    t0 = time.perf_counter()
    write_calibration(cfg, root)
    drives = []
    for index, role in progress_bar(roles, desc="mini-KITTI", unit="drive", disable=not progress):
        drives.append(generate_drive(cfg, index, root, progress))
    summary = {"drives": [d["drive"] for d in drives], "roles": [r for _, r in roles],
               "frames": sum(d["frames"] for d in drives),
               "stationary": {d["drive"]: d["stationary"] for d in drives}}
    files = _owned_files(root)
    atomic_write_text(manifest, json.dumps({"key": key, "params": dataclasses.asdict(cfg), "version": GENERATOR_VERSION,
                                            "code": rig.generator_code(), "summary": summary, "drive_info": drives,
                                            "files": files}, indent=1) + "\n")
    _write_splits(cfg, splits_dir, drives, roles)  # after the record: an edited list refused here costs no rerender
    return {**summary, "files": files, "seconds": round(time.perf_counter() - t0, 2), "reused": False, "repaired": []}


def _remove_unrecorded(root: Path, record: dict[str, str], names: list[str]) -> None:
    """Delete files outside the drives that the generator did not write (the drives are regenerated whole)."""
    for rel in _owned_files(root).keys() - record.keys():
        if not any(f"/{n}/" in f"/{rel}" for n in names):
            (root / rel).unlink()
