"""What of the split lists is on disk: the lists a run reads, its KITTI copy's fingerprint, the test frames
that can be evaluated, and coverage counts (listed / used / missing, with the first missing lines).

A partial KITTI copy is a normal case: the pipeline uses the drives and frames it finds and says what it did
not find (metrics/filter.json for train/val, metrics/export_gt.json for the test frames, both gathered in
metrics/coverage.json by the tables stage). Nothing here writes into the copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from psdif.data import kitti
from psdif.data.kitti import FrameRef, KittiError
from psdif.io import params_hash

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

def copy_fingerprint(root: str | Path, folders: Sequence[str], files: dict) -> dict:
    """Per-drive summary of the content hashes ``files`` (:func:`real_files`) of the named drives on disk.

    ``{"drives": {folder: {"files": n, "digest": ...}}, "calib": {date: digest | "missing"},
    "missing_drives": [...]}`` — deterministic: an unchanged copy gives an identical dict, and so does a
    ``touch`` (content, not modification time); a file added, removed or edited changes its drive's digest.
    """
    root = Path(root)
    drives, missing = {}, []
    for folder in sorted(folders):
        if not (root / folder).is_dir():
            missing.append(folder)
            continue
        mine = {k: v for k, v in files.items() if k.startswith(f"{folder}/")}
        drives[folder] = {"files": len(mine), "digest": params_hash(mine)}
    calib = {}  # the calibration of each date with a drive on disk
    for date in sorted({f.split("/")[0] for f in drives}):
        entries = {n: files.get(f"{date}/{n}") for n in CALIB_FILES}
        calib[date] = params_hash(entries) if all(entries.values()) else "missing"
    return {"drives": drives, "calib": calib, "missing_drives": missing}


# ------------------------------------------------------------------------------------------ test frames

NO_ANNOTATION = "no annotated depth (proj_depth/groundtruth)"
NO_NEIGHBOURS = "no neighbouring frame (t-1 and t+1) to score it with"


def test_frame_missing(root: str | Path, ref: FrameRef, img_ext: str, protocol: str = "eigen",
                       annotated_root: str | Path | None = None) -> str | None:
    """Why the GT of test frame ``ref`` cannot be made and evaluated (None: it can). ``eigen``: image, scan
    and calibration on disk; ``eigen_benchmark``: image and annotated depth PNG (design.md §4.3); ``photometric``:
    the image and both neighbours (no depth GT)."""
    root = Path(root)
    if not kitti.drive_dir(root, ref.folder).is_dir():
        return "drive not on disk"
    if not kitti.image_path(root, ref, img_ext).is_file():
        return "image not on disk"
    if protocol == "eigen_benchmark":
        return None if kitti.improved_depth_path(root, annotated_root, ref) else NO_ANNOTATION
    if protocol == "photometric":  # no depth GT: scored by warping the neighbours into the frame
        near = [FrameRef(ref.folder, ref.frame + d, ref.side) for d in (-1, 1) if ref.frame + d >= 0]
        return None if len(near) == 2 and all(kitti.image_path(root, n, img_ext).is_file() for n in near) \
            else NO_NEIGHBOURS
    if not kitti.velodyne_path(root, ref.folder, ref.frame).is_file():
        return "velodyne scan not on disk"
    calib = kitti.calib_dir(root, ref.folder)
    if not all((calib / n).is_file() for n in CALIB_FILES[:2]):
        return "calibration not on disk"
    return None


@dataclass
class EvaluableFrames:
    """A test list against the copy: the listed frames whose GT export_gt can make (``used``), the others with
    the reason (``missing``), and how many of the list's drives are on disk."""

    path: Path
    root: Path
    listed: list[FrameRef]
    used: list[FrameRef]
    missing: list[tuple[FrameRef, str]]
    drives: int
    drives_on_disk: int
    protocol: str = "eigen"

    def report(self) -> dict:
        return {"protocol": self.protocol, **coverage(self.listed, self.used, self.missing, self.path)}

    def problem(self, fetch_hint: bool = False) -> str | None:
        """Why no test frame can be evaluated, naming the fix (None when at least one can)."""
        if self.used:
            return None
        if not self.listed:
            return (f"the test list {self.path} is empty: no frame to evaluate; point data.splits_dir / "
                    f"data.test_split at a list with {LIST_FORMAT}")
        fetch = " (or set download.fetch: missing to download them)" if fetch_hint else ""
        needs = {"eigen_benchmark": "annotated depth PNG", "photometric": "neighbouring frames"}.get(
            self.protocol, "velodyne scan and calibration")
        return (f"none of the {len(self.listed)} test frames of {self.path} is on disk with its image, {needs} "
                f"({self.drives_on_disk} of {self.drives} test drives present under {self.root}; "
                f"first: {self.missing[0][0].line()} ({self.missing[0][1]})): put the test drives in data.raw_root"
                f"{fetch}, or point data.test_split at a list of test frames you have")


def evaluable_test_frames(root: str | Path, test_list: str | Path, img_ext: str, protocol: str = "eigen",
                          annotated_root: str | Path | None = None) -> EvaluableFrames:
    """The frames of ``test_list`` that can be evaluated under ``protocol`` (what export_gt reads is on disk:
    :func:`test_frame_missing`), in list order. A missing list or a malformed line is a :class:`KittiError`."""
    root, test_list = Path(root), Path(test_list)
    listed = kitti.read_split(test_list, root)
    used, missing = [], []
    for ref in listed:
        reason = test_frame_missing(root, ref, img_ext, protocol, annotated_root)
        if reason:
            missing.append((ref, reason))
        else:
            used.append(ref)
    drives = drives_of(listed)
    on_disk = sum(1 for d in drives if kitti.drive_dir(root, d).is_dir())
    return EvaluableFrames(test_list, root, listed, used, missing, len(drives), on_disk, protocol)


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


# ------------------------------------------------------------------------------------------ content hashes

STATE = "data/manifests/.raw_state.json"  # path -> [size, mtime_ns, inode, md5]: files hashed once
PROGRESS_EVERY = 2000  # files hashed between two progress lines


class ContentState:
    """MD5 of files, computed once and cached by ``(size, mtime_ns, inode)`` in a state file of ours.

    ``touch`` of a file (or a copy with the same bytes) gives the same MD5 after one re-read; an unchanged file
    is never read again. The state file is a cache only: deleting it costs one full re-hash, nothing else.
    """

    def __init__(self, path: str | Path = STATE, progress: bool = True):
        import json

        self.path, self.progress = Path(path), progress
        try:
            self.entries = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}
        self.seen: dict = {}
        self.hashed = 0
        self.hashed_bytes = 0

    def md5(self, path: str | Path) -> str:
        from psdif.io import md5_file

        path = Path(path)
        key = str(path)
        st = path.stat()
        stat = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = self.entries.get(key)
        if isinstance(entry, list) and len(entry) == 4 and entry[:3] == stat:
            digest = entry[3]
        else:
            digest = md5_file(path)
            self.hashed += 1
            self.hashed_bytes += st.st_size
            if self.progress and self.hashed % PROGRESS_EVERY == 0:
                print(f"hashing the KITTI copy: {self.hashed} files ({self.hashed_bytes / 2**30:.1f} GiB) read so far",
                      flush=True)
        self.seen[key] = stat + [digest]
        return digest

    def save(self) -> None:
        """Write the entries of the files seen in this run (files gone from the lists drop out)."""
        from psdif.io import write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, dict(sorted(self.seen.items())))


def content_files(root: str | Path, base: str | Path, state: ContentState, pattern: str = "**/*") -> dict:
    """``{path relative to root: MD5}`` of every (non-hidden) file under ``root/base`` matching ``pattern``."""
    root = Path(root)
    files = sorted(p for p in (root / base).glob(pattern) if p.is_file() and not p.name.startswith("."))
    return {str(p.relative_to(root)): state.md5(p) for p in files}


# ------------------------------------------------------------------------------------------ split manifests
# Who reads what (dvc.yaml: each stage depends on the manifest(s) of the files it reads):
#   raw_train.json - the camera images (both cameras) of every drive the lists name (the pseudolabel stage
#                    labels them all), the OXTS of the drives, the calibration of their dates and the
#                    generator's semantic ground truth (teacher / oracle): filter, pseudolabel, boundary,
#                    prepare, pretrain. No velodyne scan, no depth ground truth.
#   raw_test.json  - the test frames only: their image, velodyne scan and calibration (KITTI) or depth and
#                    semantic ground truth (generated data), and Make3D: export_gt, evaluate, figures.
# So a test-frame scan reaches only export_gt / evaluate / figures / tables / summary, and a frame of a
# train drive reaches training only through the prepared arrays of its own group.

TRAIN_SIDE = ("image_02", "image_03", "oxts")


def _is_calib(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 2 and parts[1] in CALIB_FILES


def split_raw(files: dict, test_refs: Sequence[FrameRef], img_ext: str) -> tuple[dict, dict]:
    """``files`` (path relative to the raw root -> fingerprint) split into the train side and the test side.

    Train side: ``<drive>/{image_02,image_03,oxts}/...``, calibration, ``synthetic_gt/*/semantic_*``. Test side:
    the image, the velodyne scan and the generated depth and labels of each test frame (camera of its side; the
    labels are on both sides: the evaluate stage's boundary metrics read them), and the calibration of the test
    drives' dates.
    """
    train = {k: v for k, v in files.items()
             if _is_calib(k) or (len(k.split("/")) > 3 and k.split("/")[2] in TRAIN_SIDE)
             or (k.startswith("synthetic_gt/") and "/semantic_" in k)}
    wanted = set()
    for ref in test_refs:
        cam = kitti.SIDE_TO_CAM[ref.side]
        drive = ref.folder.split("/")[-1]
        wanted |= {f"{ref.folder}/image_0{cam}/data/{ref.frame:010d}.{img_ext}",
                   f"{ref.folder}/velodyne_points/data/{ref.frame:010d}.bin",
                   f"synthetic_gt/{drive}/depth_0{cam}/{ref.frame:010d}.png",
                   f"synthetic_gt/{drive}/semantic_0{cam}/{ref.frame:010d}.png",
                   *(f"{ref.folder.split('/')[0]}/{n}" for n in CALIB_FILES)}
    wanted |= {annotation_key(ref) for ref in test_refs}
    test = {k: v for k, v in files.items() if k in wanted}
    return train, test


def annotation_key(ref: FrameRef) -> str:
    """Manifest key of the annotated depth of test frame ``ref`` (wherever it was found: in place or in
    ``data.depth_annotated_root``): ``proj_depth/<date>/<drive>/image_0{2,3}/%010d.png``."""
    return f"proj_depth/{ref.folder}/image_0{ref.cam}/{ref.frame:010d}.png"


def annotation_files(root: str | Path, annotated_root: str | Path | None, test_refs: Sequence[FrameRef],
                     state: ContentState) -> dict:
    """``{annotation_key: MD5}`` of the annotated depth PNGs of the test frames that have one on disk."""
    files = {}
    for ref in test_refs:
        path = kitti.improved_depth_path(root, annotated_root, ref)
        if path is not None:
            files[annotation_key(ref)] = state.md5(path)
    return files


def real_files(root: str | Path, folders: Sequence[str], test_refs: Sequence[FrameRef], img_ext: str,
               state: ContentState) -> dict:
    """Content hashes of what the pipeline reads of a KITTI copy: the train-side folders of every drive on disk,
    the calibration of their dates, and the velodyne scan of each test frame (not every scan of a drive)."""
    root = Path(root)
    files: dict = {}
    for folder in sorted(folders):
        for sensor in TRAIN_SIDE:
            if (root / folder / sensor).is_dir():
                files.update(content_files(root, f"{folder}/{sensor}", state))
    for date in sorted({f.split("/")[0] for f in folders}):
        for name in CALIB_FILES:
            if (root / date / name).is_file():
                files[f"{date}/{name}"] = state.md5(root / date / name)
    for ref in test_refs:
        scan = kitti.velodyne_path(root, ref.folder, ref.frame)
        if scan.is_file():
            files[str(scan.relative_to(root))] = state.md5(scan)
    return dict(sorted(files.items()))
