"""download stage (runs on every `dvc repro`): the data the split lists name -> data/manifests/raw.json.

Embedded default (``data.source: synthetic``): generate the mini-KITTI, or check the generated files against
the generator's record of what it wrote (content hashes) and regenerate the drives that differ. The record
also holds the generator's params and a hash of its code (``psdif/data/synthetic/*.py``): when either
changed, everything is generated again (saying why). Generated files are a pure function of params and code
(no time of writing in any file). A split list the generator wrote and the user edited is refused (naming
it and how to keep or discard the edit), never silently overwritten.

Real KITTI (``data.source: kitti``): ``data.raw_root`` is the user's KITTI raw copy, complete or partial. The
drives named by the train / val / test lists that are on disk are used as they are; nothing is written into
the copy unless ``download.fetch: missing`` asks to download what is missing (drive and calibration archives
from ``download.url``; bookkeeping in data/downloads/). With ``download.fetch: none`` (the default) the
network is never used: missing drives are reported, and the later stages use what is there and count
what is not (metrics/filter.json, metrics/export_gt.json, metrics/coverage.json).

Your own videos (``data.source: video``): the clips of ``video.clips`` are ingested into ``data.raw_root`` as
drives in the KITTI raw layout with their calibration (``psdif.video``: sampled at ``video.fps``, undistorted,
repeats and scene cuts handled, resumable; a clip that cannot be read is named and skipped), and the train /
val / test lists are written by clip under ``data.splits_dir`` (``video.test_clips``, or drawn by
``video.split_seed``); ``video.gt_depth`` becomes KITTI's annotated depth in place (the eigen_benchmark GT).

Every file the pipeline reads is fingerprinted by its content (MD5), hashed once and then cached by size,
mtime and inode (data/manifests/.raw_state.json): an edited frame is noticed, a ``touch`` or an unchanged
copy gives byte-identical manifests (nothing reruns). The hashes are split by who reads them
(``psdif.data.ondisk.split_raw``): data/manifests/raw_train.json (images, OXTS, calibration, semantic ground
truth: the labelling and training side) and data/manifests/raw_test.json (the test frames' images, scans,
depth, and Make3D: export_gt / evaluate / figures); raw.json is the download's summary (drives on disk). It
also records the Make3D folder (``eval.make3d_root``), fetched here and nowhere else when asked. Make3D is
optional: when its URLs cannot be reached (an HTTP 4xx, or every retry failed) the stage warns, records
``"status": "unreachable"`` and why in raw_test.json, and the pipeline goes on; the evaluate stages read that
record and Table 2 says "not run" and why. With the eigen_benchmark protocol (``data.test_protocol``) the test
frames' annotated depth PNGs are hashed into raw_test.json too, and KITTI's data_depth_annotated.zip is fetched
into ``data.depth_annotated_root`` when that folder is empty and ``download.depth_annotated`` with
``download.fetch: missing`` ask for it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from psdif.data import kitti
from psdif.data.download import DownloadError
from psdif.data.ondisk import (ContentState, annotation_files, copy_fingerprint, drives_of, list_paths, read_lists,
                               real_files, split_raw)
from psdif.data.synthetic.writer import EditedListError
from psdif.io import params_hash, progress_enabled, tree_manifest, write_json
from psdif.paths import DOWNLOADS, RAW_MANIFEST, RAW_STATE, RAW_TEST, RAW_TRAIN
from psdif.process import FolderLockedError
from psdif.stage import stage_args

MAKE3D_SYNTH = Path("data/make3d_synth")


def make3d_record(p, state: ContentState) -> dict:
    """The Make3D folder of ``eval.make3d_root``: fetched first when missing and ``download.fetch: missing``."""
    from psdif.data.make3d import ensure_make3d

    root = p.eval.make3d_root
    if root is None:
        return {"root": None}
    try:
        ensure_make3d(root, p.eval.make3d_urls, p.eval.make3d_sha256, p.download.retries,
                      fetch=p.download.fetch == "missing")
    except FileNotFoundError as exc:
        print(f"warning: Make3D (Table 2) will not run: {exc}", file=sys.stderr)
        return {"root": root, "status": "absent"}
    except DownloadError as exc:
        if not exc.unreachable:  # a fetched file that is wrong (its pinned hash): the user must look
            raise
        # an optional source: the pipeline goes on, and Table 2 says why it has no Make3D rows
        print(f"warning: Make3D (Table 2) will not run: eval.make3d_urls could not be fetched: {exc}",
              file=sys.stderr)
        return {"root": root, "status": "unreachable", "why": str(exc)}
    from psdif.data.ondisk import content_files

    return {"root": root, "files": params_hash(content_files(root, ".", state))}


def synthetic(p, root: Path, splits: Path) -> dict:
    from psdif.data.synthetic import generate_make3d, generate_mini_kitti

    summary = generate_mini_kitti(p.synthetic, root, splits, progress=progress_enabled())
    if summary.get("repaired"):
        print(f"regenerated {len(summary['repaired'])} drives whose files differed from the generator's record")
    if p.synthetic.make3d_images:
        generate_make3d(p.synthetic, MAKE3D_SYNTH)
    files = summary.pop("files")
    # deterministic content only (no timings): an unchanged tree must give a byte-identical manifest, so
    # that this always-run stage reruns nothing downstream
    summary = {k: v for k, v in summary.items() if k not in ("seconds", "reused", "repaired")}
    return {"source": "synthetic", "params": params_hash(dataclasses.asdict(p.synthetic)),
            "summary": summary, "files": files,
            "make3d_synth": tree_manifest(MAKE3D_SYNTH) if MAKE3D_SYNTH.is_dir() else {}}


def real(p, root: Path, state: ContentState) -> dict:
    from psdif.data.download import download_kitti, missing_archives

    lists = read_lists(p.data.splits_dir, p.data.train_split, p.data.test_split, root)
    folders = drives_of(*lists.values())
    archives = missing_archives(root, folders, p.download.url)
    if archives and p.download.fetch == "missing":
        print(f"fetching {len(archives)} KITTI archives from {p.download.url} into {root}")
        download_kitti(archives, root, DOWNLOADS, p.download.retries,
                       p.download.jpeg_quality if p.download.jpeg else None, progress_enabled())
    if p.data.protocol == "eigen_benchmark":
        annotated(p)
    started = time.monotonic()
    files = real_files(root, [f for f in folders if (root / f).is_dir()], lists["test"], p.data.img_ext, state)
    if p.data.protocol == "eigen_benchmark":  # the test GT: KITTI's annotated depth PNGs (export_gt reads them)
        files.update(annotation_files(root, p.data.depth_annotated_root, lists["test"], state))
    if state.hashed:
        took = time.monotonic() - started
        print(f"hashed {state.hashed} of {len(files)} files ({state.hashed_bytes / 2**20:.0f} MiB) in {took:.1f} s "
              f"({1000 * took / state.hashed:.2f} ms per file); the others were unchanged since the last run")
    record = copy_fingerprint(root, folders, files)
    named = ", ".join(str(path) for role, path in list_paths(p.data.splits_dir, p.data.train_split,
                                                             p.data.test_split).items() if lists[role])
    if not record["drives"]:
        raise SystemExit(f"error: none of the {len(folders)} drives named by {named} is under data.raw_root="
                         f"{root} (e.g. {folders[0] if folders else '-'}); point data.raw_root at your KITTI raw "
                         "copy, or set download.fetch: missing to download them")
    if record["missing_drives"]:
        how = ("" if p.download.fetch == "missing" else
               "; the run uses the drives on disk (set download.fetch: missing to download the others)")
        print(f"warning: {len(record['missing_drives'])} of the {len(folders)} drives the lists name are not under "
              f"{root}, e.g. {record['missing_drives'][0]}{how}", file=sys.stderr)
    no_calib = [d for d, v in record["calib"].items() if v == "missing"]
    if no_calib:
        print(f"warning: no calibration files under {root}/{no_calib[0]} (calib_cam_to_cam.txt, "
              "calib_velo_to_cam.txt, calib_imu_to_velo.txt): its test frames cannot be evaluated", file=sys.stderr)
    frames = sum(len(kitti.list_frames(root, d, 2)) for d in record["drives"]
                 if (root / d / "image_02" / "data").is_dir())
    print(f"{root}: {len(record['drives'])} of {len(folders)} drives on disk, {frames} camera-2 frames")
    return {"source": "kitti", **record, "files": files}


def video_camera(v):
    """The camera of the clips: ``video.camera`` (a file), ``video.intrinsics`` or a guess from ``video.hfov``
    at the most common stored clip size."""
    from psdif.camera import Camera, read_camera

    if v.camera:
        return read_camera(v.camera)
    if v.intrinsics:
        fx, fy, cx, cy, w, h = v.intrinsics
        if w != int(w) or h != int(h):
            raise SystemExit(f"error: video.intrinsics={v.intrinsics}: width and height must be whole pixels")
        return Camera(fx, fy, cx, cy, int(w), int(h), None, source="video.intrinsics")
    from collections import Counter
    from psdif.video import VideoError, find_clips, probe_clip

    sizes = Counter()
    for clip in find_clips(v.clips):
        try:
            probe = probe_clip(clip)
        except VideoError:
            continue  # the ingest names it
        sizes[(probe.width, probe.height)] += 1
    if not sizes:
        raise SystemExit(f"error: no clip of video.clips={v.clips} decodes (nothing to guess the camera from)")
    (w, h), _ = sizes.most_common(1)[0]
    cam = Camera.from_hfov(v.hfov, w, h, source=f"video.hfov {v.hfov:g} degrees")
    print(f"warning: intrinsics guessed from video.hfov = {v.hfov:g} degrees at {w}x{h}: fx = fy = {cam.fx:.1f}, "
          f"principal point at the centre (calibrate the camera with `psdif calibrate` for better depth)",
          file=sys.stderr)
    return cam


def video(p, root: Path, state: ContentState) -> dict:
    """Your own clips -> drives under data.raw_root and the lists by clip (psdif/video.py, design.md §4.8)."""
    from psdif.camera import CameraError
    from psdif.video import VideoError, ingest_clips, split_by_clip, write_lists

    v = p.video
    try:
        camera = video_camera(v)
        report = ingest_clips(v.clips, root, camera, v.fps, (v.width, v.height) if v.width else None,
                              v.folder_fps, v.cut_threshold, v.duplicate_threshold, progress_enabled(), v.gt_depth)
    except (CameraError, VideoError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for line in report.lines():
        print(line, file=sys.stderr if line.startswith("skipped") else sys.stdout)
    if not report.drives:
        raise SystemExit(f"error: no clip of video.clips={v.clips} could be ingested (reasons above)")
    try:
        lists = split_by_clip(report.drives, v.val_fraction, v.test_fraction, v.split_seed, v.test_clips)
    except ValueError as exc:
        raise SystemExit(f"error: {exc} (video.test_clips / test_fraction / val_fraction)") from None
    paths = list_paths(p.data.splits_dir, p.data.train_split, p.data.test_split)
    try:
        write_lists(p.data.splits_dir, {str(paths[role].relative_to(p.data.splits_dir)):
                                        "".join(f.line() + "\n" for f in lists[role]) for role in lists})
    except VideoError as exc:
        raise SystemExit(f"error: {exc}") from None
    roles = {r: sorted({f.folder for f in lists[r]}) for r in lists}
    print(f"split by clip (video.split_seed {v.split_seed}): " + ", ".join(
        f"{r} {len(roles[r])} drives / {len(lists[r])} frames" for r in ("train", "val", "test")))
    folders = [d.folder for d in report.drives]
    files = real_files(root, folders, lists["test"], p.data.img_ext, state)
    if p.data.protocol == "eigen_benchmark":
        files.update(annotation_files(root, None, lists["test"], state))
    cams = {date: {k: getattr(c, k) for k in ("fx", "fy", "cx", "cy", "width", "height")}
            for date, c in report.cameras.items()}
    return {"source": "video", "drives": folders, "camera_guessed": camera.guessed, "cameras": cams,
            "clips": {d.folder: d.clip for d in report.drives}, "skipped": dict(report.skipped),
            "roles": roles, "files": files}


def annotated(p) -> None:
    """Fetch the annotated depth (eigen_benchmark GT) into data.depth_annotated_root when asked and missing."""
    from psdif.data.download import download_annotated_depth

    if p.download.fetch == "missing" and p.download.depth_annotated:
        if download_annotated_depth(p.download.depth_annotated_url, p.data.depth_annotated_root, DOWNLOADS,
                                    p.download.retries, progress_enabled()):
            print(f"fetched {p.download.depth_annotated_url} into {p.data.depth_annotated_root}")


def main(argv=None) -> None:
    p, _ = stage_args("download", argv)
    root, splits = Path(p.data.raw_root), Path(p.data.splits_dir)
    state = ContentState(RAW_STATE, progress=progress_enabled())
    try:
        manifest = (synthetic(p, root, splits) if p.data.source == "synthetic" else
                    video(p, root, state) if p.data.source == "video" else real(p, root, state))
    except (kitti.KittiError, DownloadError, EditedListError, FolderLockedError) as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        manifest["make3d"] = make3d_record(p, state)
    except FolderLockedError as exc:
        raise SystemExit(f"error: {exc}") from None
    except DownloadError as exc:
        raise SystemExit(f"error: Make3D Test134 (eval.make3d_urls): {exc}; or set eval.make3d_root: null to run "
                         "without Table 2") from None
    write_split(p, manifest)
    if manifest["source"] != "synthetic":
        manifest.pop("files")
    state.save()
    write_json(RAW_MANIFEST, manifest)
    print(f"wrote {RAW_MANIFEST}, {RAW_TRAIN}, {RAW_TEST}")


def write_split(p, manifest: dict) -> None:
    """raw_train.json and raw_test.json: the content hashes by who reads them (``psdif.data.ondisk.split_raw``)."""
    try:
        lists = read_lists(p.data.splits_dir, p.data.train_split, p.data.test_split, p.data.raw_root)
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc}") from None
    train, test = split_raw(manifest["files"], lists["test"], p.data.img_ext)
    write_json(RAW_TRAIN, {"source": manifest["source"], "files": train})
    write_json(RAW_TEST, {"source": manifest["source"], "files": test, "make3d": manifest.get("make3d"),
                          "make3d_synth": manifest.get("make3d_synth", {})})


if __name__ == "__main__":
    main()
