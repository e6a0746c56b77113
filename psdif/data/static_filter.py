"""The filter stage's logic: drop static frames, write train/val lists in the published split format.

A frame is static when the car does not move: OXTS ground speed (fields vf, vl) below ``min_speed`` m/s,
or, where a frame has no OXTS packet, when the mean absolute grey-level difference to both neighbours
stays below ``min_image_motion`` (0-255 scale, on a 4x-downsampled image). Only frames with both temporal
neighbours on disk (for the (t-1, t, t+1) triplet) are candidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from psdif.process import progress_bar

from psdif.data.images import read_image
from psdif.data import kitti
from psdif.data.kitti import FrameRef, KittiError, check_folder


@dataclass
class DriveMotion:
    """Per-frame motion of one drive: speed in m/s (NaN where no OXTS) and which source decided."""

    folder: str
    frames: list[int]
    speed: dict[int, float]
    image_motion: dict[int, float]
    static: set[int]


def _grey_small(path: Path) -> np.ndarray:
    img = read_image(path).astype(np.float32)
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    h, w = grey.shape[0] // 4 * 4, grey.shape[1] // 4 * 4
    return grey[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))


def drive_motion(root: Path, folder: str, min_speed: float, min_image_motion: float,
                 img_ext: str = "png") -> DriveMotion:
    """Classify every frame of ``folder`` (camera 2 frames on disk) as moving or static."""
    frames = kitti.list_frames(root, folder, 2)
    speed: dict[int, float] = {}
    motion: dict[int, float] = {}
    static: set[int] = set()
    grey_cache: dict[int, np.ndarray] = {}

    def grey(i: int) -> np.ndarray:
        if i not in grey_cache:
            grey_cache[i] = _grey_small(kitti.image_path(root, FrameRef(folder, i, "l"), img_ext))
        return grey_cache[i]

    present = set(frames)
    for i in frames:
        ox = kitti.oxts_path(root, folder, i)
        if ox.exists():
            speed[i] = kitti.oxts_speed(kitti.read_oxts(ox))
            if speed[i] < min_speed:
                static.add(i)
            continue
        neighbours = [j for j in (i - 1, i + 1) if j in present]
        if not neighbours:
            continue
        motion[i] = float(max(np.abs(grey(i) - grey(j)).mean() for j in neighbours))
        if motion[i] < min_image_motion:
            static.add(i)
    return DriveMotion(folder, frames, speed, motion, static)


def candidate_frames(dm: DriveMotion) -> list[int]:
    """Moving frames with both neighbours on disk."""
    present = set(dm.frames)
    return [i for i in dm.frames if i not in dm.static and i - 1 in present and i + 1 in present]


def _in_val(folder: str, frame: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(f"{folder} {frame}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def read_drive_roles(path: Path) -> dict[str, str]:
    """``synthetic_drives.txt``: ``<date>/<drive> train|val|test`` per line."""
    if not path.exists():
        raise KittiError(f"{path}: drive list not found (run the download stage first)")
    roles = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("train", "val", "test"):
            raise KittiError(f"{path}:{i}: expected '<date>/<drive> train|val|test', got {line!r}")
        try:
            check_folder(parts[0])  # the drive folder stays inside data.raw_root
        except KittiError as exc:
            raise KittiError(f"{path}:{i}: {line.strip()!r}: {exc}") from None
        roles[parts[0]] = parts[1]
    return roles


@dataclass
class FilterResult:
    train: list[FrameRef]
    val: list[FrameRef]
    motions: list[DriveMotion]
    dropped: dict[str, int]          # reason -> listed lines not kept
    static_listed: int               # listed lines whose frame is static (dropped or not, see drop_static)
    not_kept: dict[str, list[tuple[FrameRef, str]]] = field(default_factory=dict)  # train / val -> (line, reason)

    @property
    def static(self) -> dict[str, list[int]]:
        return {m.folder: sorted(m.static) for m in self.motions}


def filter_lists(root: Path, train: list[FrameRef], val: list[FrameRef], min_speed: float, min_image_motion: float,
                 drop_static: bool, val_fraction: float, img_ext: str = "png", progress: bool = True) -> FilterResult:
    """Restrict published (or a user's) train / val lists to what can be trained on, keeping their order.

    A listed line is kept when its drive, its frame and both neighbours (t-1, t+1) of its camera are on disk,
    and, with ``drop_static``, when its frame is not static. With an empty ``val`` list a fixed hash of each
    frame moves ``val_fraction`` of the kept train lines to val (independent of order and machine).
    ``dropped`` counts the lines not kept per reason, ``not_kept`` names them (per list, in list order).
    """
    dropped = {"drive not on disk": 0, "frame or a neighbour not on disk": 0, "static": 0}
    drives = sorted({f.folder for f in (*train, *val)})
    motions, on_disk = [], {}
    for folder in progress_bar(drives, desc="filter", unit="drive", disable=not progress):
        if not kitti.drive_dir(root, folder).is_dir():
            continue
        motions.append(drive_motion(root, folder, min_speed, min_image_motion, img_ext))
        on_disk[folder] = {side: set(kitti.list_frames(root, folder, kitti.SIDE_TO_CAM[side]))
                           if (kitti.drive_dir(root, folder) / f"image_0{kitti.SIDE_TO_CAM[side]}").is_dir() else set()
                           for side in ("l", "r")}
    static = {m.folder: m.static for m in motions}
    static_listed = 0

    not_kept: dict[str, list[tuple[FrameRef, str]]] = {"train": [], "val": []}

    def keep(ref: FrameRef, role: str) -> bool:
        nonlocal static_listed
        reason = None
        if ref.folder not in on_disk:
            reason = "drive not on disk"
        elif not {ref.frame - 1, ref.frame, ref.frame + 1} <= on_disk[ref.folder][ref.side]:
            reason = "frame or a neighbour not on disk"
        elif ref.frame in static[ref.folder]:
            static_listed += 1
            reason = "static" if drop_static else None
        if reason:
            dropped[reason] += 1
            not_kept[role].append((ref, reason))
        return reason is None

    kept_train = [f for f in train if keep(f, "train")]
    kept_val = [f for f in val if keep(f, "val")]
    if not val and val_fraction > 0:
        kept_val = [f for f in kept_train if _in_val(f.folder, f.frame, val_fraction)]
        kept_train = [f for f in kept_train if not _in_val(f.folder, f.frame, val_fraction)]
    return FilterResult(kept_train, kept_val, motions, dropped, static_listed, not_kept)


def agreement(kept: list[FrameRef], published: list[FrameRef]) -> dict:
    """Overlap of our kept frames with a published list, camera side ignored."""
    ours = {(f.folder, f.frame) for f in kept}
    theirs = {(f.folder, f.frame) for f in published}
    both = ours & theirs
    return {
        "published_frames": len(theirs),
        "kept_frames": len(ours),
        "published_recall": len(both) / max(1, len(theirs)),   # published frames we keep
        "kept_precision": len(both) / max(1, len(ours)),       # our frames that are published
    }


# ------------------------------------------------------------------------------------------ before training

def launch_processes(env=None) -> int:
    """How many training processes a run launches: PSDIF_NPROC per machine x PSDIF_NNODES machines (as
    :func:`psdif.distributed.torchrun_command` launches them; read here without importing torch)."""
    import os

    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("PSDIF_NPROC", "1"))) * max(1, int(env.get("PSDIF_NNODES", "1")))
    except ValueError:
        return 1  # not a number: the train stage's launcher says so


def batch_problem(n_frames: int, batch_size: int, processes: int, raw_root, where: str = "") -> str | None:
    """Why ``n_frames`` training frames cannot fill one step of ``train.batch_size`` (the GLOBAL batch, split
    evenly over ``processes``), naming the fix; None when they can. The train stage drops the last partial
    batch, so fewer frames than one batch would stop it only after pseudo-labelling and pretraining.
    ``where``: text after "on disk" (which drives)."""
    if batch_size % processes:
        return (f"train.batch_size={batch_size} must be divisible by the {processes} training processes "
                f"(PSDIF_NPROC x PSDIF_NNODES): set train.batch_size to a multiple of {processes}")
    if n_frames >= batch_size:
        return None
    lower = n_frames // processes * processes
    fix = (f"lower train.batch_size to {lower} (`dvc exp run -S train.batch_size={lower}`) or put more drives in "
           f"{raw_root}" if lower else f"put more drives in {raw_root} or list more frames")
    return f"{n_frames} training frames on disk{where} give no full batch of {batch_size}: {fix}"


# ------------------------------------------------------------------------------------------ what it says

def summary_line(report: dict, out_dir: str | Path) -> str:
    """The filter stage's one-line summary of its report (metrics/filter.json holds the details)."""
    dropped = ", ".join(f"{n} {why}" for why, n in report["dropped"].items() if n) or "none"
    val = (f"{report['val_lines']} of {report['listed_val']} val lines" if report["listed_val"] else
           f"{report['val_lines']} val lines set aside from train")
    drives = f"{report['drives']} drive{'s' if report['drives'] != 1 else ''}"
    return (f"kept {report['train_lines']} of {report['listed_train']} train lines and {val} ({drives} on disk); "
            f"dropped: {dropped}; {report['static_listed']} listed frames are static -> {out_dir}/")


def empty_val_reason(val_file: Path, listed_val: int, not_kept: list[tuple[FrameRef, str]], val_fraction: float,
                     kept_train: int) -> str:
    """Why the filter's validation list has no line, naming the list it read (or the one it looked for)."""
    where = val_file.resolve()
    if listed_val:
        reasons: dict[str, int] = {}
        for _, why in not_kept:
            reasons[why] = reasons.get(why, 0) + 1
        counts = ", ".join(f"{n} {why}" for why, n in reasons.items())
        first = f", e.g. {not_kept[0][0].line()} ({not_kept[0][1]})" if not_kept else ""
        return f"all {listed_val} lines of {where} were dropped ({counts}){first}"
    if val_file.is_file():
        return f"{where} lists no frame"
    if val_fraction <= 0:
        return f"there is no {where}, and filter.val_fraction is 0 (no train line is set aside)"
    return (f"there is no {where}, and filter.val_fraction={val_fraction} of the {kept_train} kept train lines "
            "selected none")
