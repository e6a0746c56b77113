"""Prepared frames: the training inputs resized ONCE to the network size, stored to load at memory speed.

Decoding three 1242 x 375 PNGs and resizing them costs a loader about 35 ms of CPU per sample; the same
frames read from a memory-mapped uint8 array cost a copy (``bench/loader.py``, BENCHMARKS.md "Training
data loader"). The ``prepare`` stage writes, for every (drive, camera) that the training list uses, the
frames it needs (each target and its neighbours t-1, t+1):

    data/prepared/images/<date>/<drive>/image_0{2,3}.npy       uint8 [N, H, W, 3]  (INTER_AREA when shrinking)
    data/prepared/labels/<date>/<drive>/image_0{2,3}.npy       uint8 [N, H, W]     pseudo-labels, nearest
    data/prepared/boundaries/<date>/<drive>/image_0{2,3}.npy   uint8 [N, H, ceil(W / 8)]  B_t, nearest, packbits

with the resizing of ``psdif.data.images`` (the functions the PNG loader calls), so a prepared item equals a
PNG item bit for bit (tests/test_prepared.py). Each kind has its manifest (``data/manifests/prepared_*.json``:
height, width, frames and image size of every group, file digests); the three kinds are written and hashed
apart, so new pseudo-labels rewrite the label arrays and leave the image arrays (and the variants that read
only images) untouched. A file is written under a temporary name and renamed when complete; a killed stage
resumes with the groups not yet written, and every run first checks the arrays it keeps against the previous
manifest (size, mtime and inode; hashed again only when those changed): a missing or changed one is written again.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from psdif.data.batch import FRAME_IDS
from psdif.data.images import opencv_single_threaded, read_image, resize_image, resize_nearest
from psdif.data.kitti import SIDE_TO_CAM, FrameRef, image_path
from psdif.io import (TreeCheck, atomic_path, join_under, params_hash, prepare_output_tree, previous_record,
                      read_json, write_json)
from psdif.semantics.boundary import read_boundary_png
from psdif.semantics.labels import label_path, read_label_png

KINDS = ("images", "labels", "boundaries")
FORMAT = 1  # bump when the stored layout changes: every prepared tree is rewritten


class PreparedError(RuntimeError):
    """A prepared array is missing, stale or does not hold a frame; the message says what to do."""


def needed_frames(targets: Iterable[FrameRef]) -> dict[tuple[str, str], list[int]]:
    """``{(folder, side): sorted frame numbers}``: every target and its FRAME_IDS neighbours."""
    groups: dict[tuple[str, str], set[int]] = {}
    for t in targets:
        groups.setdefault((t.folder, t.side), set()).update(t.frame + o for o in FRAME_IDS)
    return {k: sorted(v) for k, v in sorted(groups.items())}


def group_file(root: Path, folder: str, side: str) -> Path:
    return join_under(root, folder, f"image_0{SIDE_TO_CAM[side]}.npy", what="prepared array")


# ------------------------------------------------------------------------------------------ per frame

@dataclass(frozen=True)
class FrameReader:
    """Reads one frame of one kind at network size, as the PNG loader does (picklable for worker processes).

    kind: images | labels | boundaries; root: the KITTI raw root (images) or the label / boundary PNG root.
    """

    kind: str
    root: str
    height: int
    width: int
    img_ext: str = "png"

    def __call__(self, ref: FrameRef) -> tuple[np.ndarray, tuple[int, int]]:
        """(array at network size, (height, width) of the file on disk)."""
        if self.kind == "images":
            image = read_image(image_path(self.root, ref, self.img_ext))
            return resize_image(image, self.height, self.width), image.shape[:2]
        path = label_path(self.root, ref.folder, ref.side, ref.frame)
        if self.kind == "labels":
            labels = read_label_png(path)
            return resize_nearest(labels, self.height, self.width), labels.shape
        mask = read_boundary_png(path).astype(np.uint8)
        return np.packbits(resize_nearest(mask, self.height, self.width).astype(bool), axis=-1), mask.shape


def input_rel(kind: str, folder: str, side: str, frame: int, img_ext: str) -> str:
    """The input file of one frame of a kind, as its manifest names it (relative to data.raw_root for images,
    to the label / boundary tree for the others)."""
    ext = img_ext if kind == "images" else "png"
    return f"{folder}/image_0{SIDE_TO_CAM[side]}/data/{int(frame):010d}.{ext}"


def group_inputs(kind: str, groups: dict[tuple[str, str], list[int]], files: dict, img_ext: str) -> dict[str, str]:
    """``{"<folder> <side>": digest}``: a hash of the content hashes (``files``: the raw_train, pseudo-label or
    boundary manifest's ``files``) of the input frames of each group. A group is re-prepared when its digest
    changes, so a changed frame re-prepares its own group only (and leaves the other groups' entries, hence
    the manifest of a kind whose inputs did not change, byte for byte the same). ``files`` may also be one
    digest of the whole input (a string): then it keys every group."""
    if not isinstance(files, dict):
        return {f"{folder} {side}": params_hash(files) for folder, side in groups}
    return {f"{folder} {side}": params_hash([files.get(input_rel(kind, folder, side, f, img_ext)) for f in frames])
            for (folder, side), frames in groups.items()}


def code_digest() -> str:
    """Hash of the source of every function that decides a prepared value: editing one re-prepares."""
    from psdif.data import images

    return params_hash([inspect.getsource(f) for f in (images.open_image, read_image, resize_image,
                                                       resize_nearest, read_label_png, read_boundary_png,
                                                       FrameReader.__call__)])


def _row_shape(kind: str, height: int, width: int) -> tuple[int, ...]:
    return {"images": (height, width, 3), "labels": (height, width), "boundaries": (height, (width + 7) // 8)}[kind]


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ the stage's work

def prepare_kind(reader: FrameReader, groups: dict[tuple[str, str], list[int]], out_root: Path,
                 manifest: Path, config: dict, workers: int, progress: bool = True,
                 inputs: dict[str, str] | None = None) -> dict:
    """Write the arrays of one kind for ``groups`` under ``out_root`` and its ``manifest``; returns the manifest.

    config: everything the arrays depend on besides the code and the input frames (sizes, frames); a tree made
    under another config (or another FORMAT) is deleted first. inputs: ``{"<folder> <side>": digest of the
    group's input frames}`` (:func:`group_inputs`); a kept group whose digest changed is prepared again, the
    others are kept (and resume: groups already complete are kept).
    """
    from psdif.process import progress_bar

    key = params_hash({"format": FORMAT, "code": code_digest(), "kind": reader.kind, "height": reader.height, "width": reader.width,
                       **config, "groups": {f"{f} {s}": v for (f, s), v in groups.items()}})
    prepare_output_tree(out_root, key, f"re-preparing every {reader.kind} array")
    shape = _row_shape(reader.kind, reader.height, reader.width)
    inputs = inputs or {}
    record = previous_record(manifest, key, "groups")
    outdated = [] if record is None else [
        (folder, side) for folder, side in groups
        if (record.get(f"{folder} {side}") or {}).get("inputs") != inputs.get(f"{folder} {side}")]
    check = check_groups(out_root, groups, record, outdated)
    print(check.report(f"prepare {reader.kind}", "array", "re-preparing"))
    redo = set(check.todo)
    todo = [(g, frames) for g, frames in groups.items()
            if str(group_file(out_root, *g).relative_to(out_root)) in redo]
    pool = None
    if workers > 1 and todo:
        import multiprocessing as mp

        with opencv_single_threaded():
            pool = mp.get_context("fork").Pool(workers)
    try:
        bar = progress_bar(total=sum(len(f) for _, f in todo), desc=f"prepare {reader.kind}", unit="frame",
                           disable=not progress)
        for (folder, side), frames in todo:
            _write_group(reader, folder, side, frames, group_file(out_root, folder, side), shape, pool, bar)
        bar.close()
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    entries = {}
    for (folder, side), frames in groups.items():
        path = group_file(out_root, folder, side)
        meta = read_json(_digest_file(path))
        entries[f"{folder} {side}"] = {"file": str(path.relative_to(out_root)), "frames": frames,
                                       "image_hw": meta["image_hw"], "md5": meta["md5"],
                                       "inputs": inputs.get(f"{folder} {side}")}
    out = {"enabled": True, "kind": reader.kind, "root": str(out_root), "config": key, "height": reader.height,
           "width": reader.width, "groups": entries}
    write_json(manifest, out)
    return out


def check_groups(out_root: Path, groups, record: dict | None, outdated=()) -> TreeCheck:
    """Which group arrays of a kind are missing or differ from the previous manifest (``record``: its
    ``groups`` when made under the same configuration, else None); changed ones are deleted, and so are
    those of ``outdated`` groups (``(folder, side)``: made from input frames that changed since).

    An array is compared by size, mtime and inode with the record written beside it when it was finished, and
    hashed only when those differ (an array of a real KITTI drive is hundreds of MB); its MD5 must also be
    the one the manifest lists.
    """
    kept, unrecorded, missing, changed, new, stale = [], [], [], [], [], []
    outdated = set(outdated)
    for folder, side in groups:
        path = group_file(out_root, folder, side)
        rel = str(path.relative_to(out_root))
        if (folder, side) in outdated and _complete(path):
            path.unlink(missing_ok=True)
            _digest_file(path).unlink(missing_ok=True)
            stale.append(rel)
            continue
        listed = None if record is None else (record.get(f"{folder} {side}") or {}).get("md5")
        if not _complete(path):
            (missing if listed else new).append(rel)
        elif _verified(path, listed):
            (kept if listed else unrecorded).append(rel)
        else:
            path.unlink(missing_ok=True)
            _digest_file(path).unlink(missing_ok=True)
            changed.append(rel)
    return TreeCheck(record is not None, kept, unrecorded, missing, changed, new, [], stale)


def _verified(path: Path, listed: str | None) -> bool:
    """The finished array at ``path`` still holds what its record (and the manifest's ``listed`` MD5) says."""
    try:
        meta = read_json(_digest_file(path))
        st = path.stat()
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or "md5" not in meta or (listed is not None and meta["md5"] != listed):
        return False
    if _stat_record(st).items() <= meta.items():
        return True
    if _md5(path) != meta["md5"]:
        return False
    write_json(_digest_file(path), {**meta, **_stat_record(st)})  # next time: stat only
    return True


def _stat_record(st) -> dict:
    """What identifies a file's version without reading it (a copy over it has another inode, ``cp -p`` too)."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _complete(path: Path) -> bool:
    """A group is complete when its array and then its record were both written (each atomically)."""
    return path.exists() and _digest_file(path).exists()


def _digest_file(path: Path) -> Path:
    """The record written beside a finished group array: ``.<name>.json`` (md5, image size)."""
    return path.with_name(f".{path.name}.json")


def _write_group(reader: FrameReader, folder: str, side: str, frames: Sequence[int], path: Path,
                 shape: tuple[int, ...], pool, bar) -> None:
    refs = [FrameRef(folder, f, side) for f in frames]
    results = pool.imap(reader, refs, chunksize=4) if pool is not None else map(reader, refs)
    sizes = set()
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(refs), *shape))
        for row, (ref, (value, hw)) in enumerate(zip(refs, results)):
            array[row] = value
            sizes.add(tuple(hw))
            bar.update(1)
        array.flush()
        del array
        if len(sizes) != 1:
            raise PreparedError(f"{folder} camera {side}: frames of different sizes {sorted(sizes)}; "
                                "every frame of a drive must have the size of the first")
        digest = _md5(tmp)
    st = path.stat()  # the rename keeps the mtime: a later run compares it before hashing again
    write_json(_digest_file(path), {"md5": digest, "image_hw": list(sizes.pop()), **_stat_record(st)})


def disabled_manifest(kind: str, manifest: Path, inputs: dict[str, str] | None = None) -> dict:
    """``prepare.enabled: false``: a manifest that sends the loader to the PNGs. ``inputs``: the digest of
    each group's input frames (:func:`group_inputs`), so that the manifest (a train stage's dependency)
    changes exactly when a PNG training decodes does."""
    out = {"enabled": False, "kind": kind}
    if inputs is not None:
        out["inputs"] = params_hash(inputs)
    write_json(manifest, out)
    return out


# ------------------------------------------------------------------------------------------ reading

class PreparedFrames:
    """Reads training frames from the prepared arrays (memory-mapped, opened lazily in each process).

    manifests: ``{kind: manifest path}`` for the kinds the variant reads (``images`` always). The dataset
    calls :meth:`images`, :meth:`labels`, :meth:`boundary` per target, and :meth:`image_hw` for the
    intrinsics. A frame that is not prepared raises :class:`PreparedError` naming it.
    """

    def __init__(self, manifests: dict[str, str | Path]):
        self.manifests = {k: Path(v) for k, v in manifests.items()}
        self.meta: dict[str, dict] = {}
        for kind, path in self.manifests.items():
            meta = read_json(path)
            if not meta.get("enabled"):
                raise PreparedError(f"{path}: prepared frames are disabled (prepare.enabled: false); read "
                                    "the PNGs instead")
            self.meta[kind] = meta
        if "images" not in self.meta:
            raise PreparedError("the prepared images manifest is required")
        sizes = {(m["height"], m["width"]) for m in self.meta.values()}
        if len(sizes) != 1:
            raise PreparedError(f"prepared manifests of different sizes {sorted(sizes)}: run dvc repro prepare")
        self.height, self.width = sizes.pop()
        self.rows = {kind: {g: {f: i for i, f in enumerate(e["frames"])} for g, e in m["groups"].items()}
                     for kind, m in self.meta.items()}
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def __getstate__(self):  # worker processes open their own maps
        return {**self.__dict__, "_arrays": {}}

    def check_size(self, height: int, width: int) -> None:
        if (height, width) != (self.height, self.width):
            raise PreparedError(f"{self.manifests['images']}: frames prepared at {self.height} x {self.width}, "
                                f"training at {height} x {width}; run dvc repro prepare")

    def _array(self, kind: str, group: str) -> np.ndarray:
        arr = self._arrays.get((kind, group))
        if arr is None:
            meta = self.meta[kind]
            path = Path(meta["root"]) / meta["groups"][group]["file"]
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise PreparedError(f"{path}: unreadable prepared array ({exc}); run dvc repro prepare") from None
            expected = (len(meta["groups"][group]["frames"]), *_row_shape(kind, self.height, self.width))
            if arr.shape != expected or arr.dtype != np.uint8:
                raise PreparedError(f"{path}: holds {arr.dtype} {arr.shape}, the manifest says uint8 {expected}; "
                                    "delete it and run dvc repro prepare")
            self._arrays[(kind, group)] = arr
        return arr

    def _rows(self, kind: str, target: FrameRef, offsets: Sequence[int]) -> tuple[str, list[int]]:
        group = f"{target.folder} {target.side}"
        rows = self.rows[kind].get(group)
        if rows is None:
            raise PreparedError(f"{target.folder} camera {target.side}: no prepared {kind} "
                                f"({self.manifests[kind]}); was the frame list changed? run dvc repro prepare")
        try:
            return group, [rows[target.frame + o] for o in offsets]
        except KeyError as exc:
            raise PreparedError(f"frame {target.folder} {exc.args[0]} {target.side} (target {target.line()}) is not "
                                f"among the prepared {kind} ({self.manifests[kind]}); run dvc repro prepare") from None

    def image_hw(self, target: FrameRef) -> tuple[int, int]:
        h, w = self.meta["images"]["groups"][f"{target.folder} {target.side}"]["image_hw"]
        return int(h), int(w)

    def images(self, target: FrameRef) -> np.ndarray:
        """uint8 [len(FRAME_IDS), H, W, 3] of the target's frames in FRAME_IDS order (a copy)."""
        group, rows = self._rows("images", target, FRAME_IDS)
        return self._array("images", group)[rows]

    def labels(self, target: FrameRef) -> np.ndarray:
        """uint8 [len(FRAME_IDS), H, W]."""
        group, rows = self._rows("labels", target, FRAME_IDS)
        return self._array("labels", group)[rows]

    def boundary(self, target: FrameRef) -> np.ndarray:
        """bool [1, H, W]: B_t of the target frame."""
        group, rows = self._rows("boundaries", target, (0,))
        packed = self._array("boundaries", group)[rows]
        return np.unpackbits(packed, axis=-1, count=self.width).astype(bool)


def load_prepared(manifests: dict[str, str | Path]) -> Optional[PreparedFrames]:
    """:class:`PreparedFrames` when the images manifest says enabled, None when prepare.enabled is false."""
    if not read_json(manifests["images"]).get("enabled"):
        return None
    return PreparedFrames(manifests)


def prepare_all(raw_root: str, labels_root: Optional[str], boundary_root: Optional[str], img_ext: str,
                height: int, width: int, targets: Sequence[FrameRef], out_root: Path,
                manifests: dict[str, Path], input_files: dict[str, dict], workers: int,
                progress: bool = True) -> dict:
    """Prepare images (and labels / boundaries when their roots are given) for the targets' frames.

    input_files: ``{kind: {file: content hash}}`` (the ``files`` of the raw_train, pseudo-label and boundary
    manifests): each group is keyed by the hashes of its own frames (:func:`group_inputs`).
    Returns ``{kind: manifest}``.
    """
    groups = needed_frames(targets)
    roots = {"images": raw_root, "labels": labels_root, "boundaries": boundary_root}
    out = {}
    for kind in KINDS:
        if roots[kind] is None:
            continue
        reader = FrameReader(kind, str(roots[kind]), height, width, img_ext)
        out[kind] = prepare_kind(reader, groups, Path(out_root) / kind, manifests[kind],
                                 {"img_ext": img_ext if kind == "images" else None}, workers, progress,
                                 group_inputs(kind, groups, input_files.get(kind, {}), img_ext))
    return out
