"""What of the split lists is on disk: the lists a run reads, its KITTI copy's fingerprint, the test frames
that can be evaluated, and coverage counts (listed / used / missing, with the first missing lines).

A partial KITTI copy is a normal case: the pipeline uses the drives and frames it finds and says what it did
not find (metrics/filter.json for train/val, metrics/export_gt.json for the test frames, both gathered in
metrics/coverage.json by the tables stage). Nothing here writes into the copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from psdif.data import kitti
from psdif.data.kitti import FrameRef, KittiError
from psdif.io import params_hash, tree_manifest

LIST_FORMAT = "one '<date>/<date>_drive_NNNN_sync <frame> <l|r>' per line (Monodepth2's format)"
SENSOR_FOLDERS = ("image_02", "image_03", "velodyne_points", "oxts")  # what the pipeline reads of a drive
FIRST_MISSING = 10  # missing lines named in a coverage report
CALIB_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")


def list_paths(splits_dir: str | Path, train_split: str, test_split: str) -> dict[str, Path]:
    """``train``, ``val`` and ``test`` list paths: ``<splits_dir>/<train_split>/{train,val}_files.txt`` and
    ``<splits_dir>/<test_split>/test_files.txt``."""
    d = Path(splits_dir)
    return {"train": d / train_split / "train_files.txt", "val": d / train_split / "val_files.txt",
            "test": d / test_split / "test_files.txt"}


def read_lists(splits_dir: str | Path, train_split: str, test_split: str,
               root: str | Path | None = None) -> dict[str, list[FrameRef]]:
    """The lines of the train, val (empty when there is no val list) and test lists.

    A missing train or test list, or a malformed line, is a :class:`KittiError` naming the file (and line);
    so is a drive folder that leaves ``root`` (``data.raw_root``): ``..``, absolute, a symbolic link out.
    """
    paths = list_paths(splits_dir, train_split, test_split)
    for role, key in (("train", "data.train_split"), ("test", "data.test_split")):
        if not paths[role].is_file():
            raise KittiError(f"{paths[role]}: no {role} list (data.splits_dir / {key}); a split folder holds "
                             f"{paths[role].name} with {LIST_FORMAT}")
    return {role: kitti.read_split(path, root) if path.is_file() else [] for role, path in paths.items()}


def drives_of(*lists: Sequence[FrameRef]) -> list[str]:
    return sorted({f.folder for refs in lists for f in refs})


# ------------------------------------------------------------------------------------------ fingerprint

def copy_fingerprint(root: str | Path, folders: Sequence[str]) -> dict:
    """Size-and-mtime fingerprint of the named drives on disk (and of their dates' calibration), per drive.

    ``{"drives": {folder: {"files": n, "digest": ...}}, "calib": {date: digest | "missing"},
    "missing_drives": [...]}`` — deterministic: an unchanged copy gives an identical dict; any file added,
    removed, resized or touched changes its drive's digest.
    """
    root = Path(root)
    drives, missing = {}, []
    for folder in sorted(folders):
        base = root / folder
        if not base.is_dir():
            missing.append(folder)
            continue
        files = {}
        for sensor in SENSOR_FOLDERS:
            if (base / sensor).is_dir():
                files.update({f"{sensor}/{k}": v for k, v in tree_manifest(base / sensor, content=False).items()})
        drives[folder] = {"files": len(files), "digest": params_hash(files)}
    calib = {}  # the calibration of each date with a drive on disk
    for date in sorted({f.split("/")[0] for f in drives}):
        paths = [root / date / n for n in CALIB_FILES]
        calib[date] = (params_hash({p.name: f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths})
                       if all(p.is_file() for p in paths) else "missing")
    return {"drives": drives, "calib": calib, "missing_drives": missing}


# ------------------------------------------------------------------------------------------ test frames

def test_frame_missing(root: str | Path, ref: FrameRef, img_ext: str) -> str | None:
    """Why the GT of test frame ``ref`` cannot be made and evaluated (None: image, scan and calib on disk)."""
    root = Path(root)
    if not kitti.drive_dir(root, ref.folder).is_dir():
        return "drive not on disk"
    if not kitti.image_path(root, ref, img_ext).is_file():
        return "image not on disk"
    if not kitti.velodyne_path(root, ref.folder, ref.frame).is_file():
        return "velodyne scan not on disk"
    calib = kitti.calib_dir(root, ref.folder)
    if not all((calib / n).is_file() for n in CALIB_FILES[:2]):
        return "calibration not on disk"
    return None


def coverage(listed: Sequence[FrameRef], used: Sequence[FrameRef], missing: Sequence[tuple[FrameRef, str]],
             list_path: str | Path | None = None) -> dict:
    """A coverage report: counts, why lines were not used (``missing``: (line, reason) in list order), and
    the first missing lines."""
    reasons: dict[str, int] = {}
    for _, reason in missing:
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"list": str(list_path) if list_path is not None else None, "listed": len(listed), "used": len(used),
            "missing": len(missing), "missing_by_reason": reasons,
            "first_missing": [f"{ref.line()} ({reason})" for ref, reason in missing[:FIRST_MISSING]]}
