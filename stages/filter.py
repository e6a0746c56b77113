"""filter stage: the lists training reads -> data/lists/{train,val}_files.txt, metrics/filter.json.

Input: the train (and val) list of ``<data.splits_dir>/<data.train_split>/`` (Monodepth2 format: the published
eigen_zhou lists, the generated set's synth_zhou lists, or a user's own); they are read, never written. Kept:
the listed lines whose drive, frame and both neighbours are on disk, without static frames when
``filter.drop_static`` (OXTS speed, or image motion where OXTS is missing: your own videos, counted per clip). The report counts what was
dropped and why, and how many listed frames the OXTS filter calls static (also when they are kept).

Before any stage labels or trains, it stops (exit 2, one ``error:`` line per problem, the report still
written, no list written) when the kept train lines cannot fill one ``train.batch_size`` batch (the global
batch, divisible by PSDIF_NPROC x PSDIF_NNODES processes), or when no frame of the test list can be
evaluated (image, velodyne scan and calibration on disk: what export_gt reads, same function); both name
the fix. The test-side files are looked at, not depended on: export_gt checks them again when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from psdif.data import kitti
from psdif.data.ondisk import LIST_FORMAT, coverage, drives_of, evaluable_test_frames, list_paths
from psdif.data.static_filter import (batch_problem, empty_val_reason, filter_lists, launch_processes,
                                      summary_line)
from psdif.io import progress_enabled, write_json
from psdif.stage import stage_args

OUT = Path("data/lists")
RECORD = "video_ingest.json"  # psdif.video.RECORD; not imported, so that editing the ingest reruns no filter


def read_stationary(root: Path, folder: str) -> list[int]:
    """The generator's ground truth: frame indices it drove at zero speed."""
    path = root / "synthetic_gt" / folder.split("/")[-1] / "stationary.txt"
    if not path.exists():
        raise kitti.KittiError(f"{path}: generator ground truth missing; re-run the download stage")
    return sorted(int(x) for x in path.read_text().split())


def static_by_clip(root: Path, static: dict[str, list[int]]) -> dict[str, int]:
    """clip name -> frames without image motion, summed over its drives (their video_ingest.json names it)."""
    from psdif.io import read_json

    counts: dict[str, int] = {}
    for folder, frames in sorted(static.items()):
        record = kitti.drive_dir(root, folder) / RECORD
        clip = read_json(record).get("clip", folder) if record.is_file() else folder
        counts[clip] = counts.get(clip, 0) + len(frames)
    return counts


def main(argv=None) -> None:
    p, _ = stage_args("filter", argv)
    root, lists = Path(p.data.raw_root), Path(p.data.splits_dir) / p.data.train_split
    train_file, val_file = lists / "train_files.txt", lists / "val_files.txt"
    if not train_file.is_file():
        raise SystemExit(f"error: {train_file}: no train list (data.splits_dir / data.train_split); a split folder "
                         f"holds train_files.txt and optionally val_files.txt, {LIST_FORMAT}")
    try:
        listed_train = kitti.read_split(train_file, root)
        listed_val = kitti.read_split(val_file, root) if val_file.is_file() else []
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:  # the test frames export_gt will evaluate (cheap: a few stat calls per listed frame)
        test_frames = evaluable_test_frames(root, list_paths(p.data.splits_dir, p.data.train_split,
                                                              p.data.test_split)["test"], p.data.img_ext,
                                            p.data.protocol, p.data.depth_annotated_root)
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc} (data.splits_dir / data.test_split)") from None
    f = p.filter
    try:
        result = filter_lists(root, listed_train, listed_val, f.min_speed, f.min_image_motion, f.drop_static,
                              f.val_fraction, p.data.img_ext, progress=progress_enabled())
    except kitti.KittiError as exc:  # a drive folder without its camera folder, an unreadable OXTS file, ...
        raise SystemExit(f"error: {exc}") from None
    report = {
        "train_split": str(lists), "listed_train": len(listed_train), "listed_val": len(listed_val),
        "train_lines": len(result.train), "val_lines": len(result.val), "dropped": result.dropped,
        "drives": len(result.motions), "static_frames": sum(len(m.static) for m in result.motions),
        "static_listed": result.static_listed, "drop_static": f.drop_static,
        # listed / used / missing per list; a val list carved from train (no val_files.txt) counts as train
        "coverage": {"train": coverage(listed_train, result.train if listed_val else result.train + result.val,
                                       result.not_kept["train"], train_file),
                     "val": coverage(listed_val, result.val if listed_val else [], result.not_kept["val"],
                                     val_file if listed_val else None)},
    }
    if p.data.source == "synthetic":
        found = {d: s for d, s in result.static.items()}
        expected = {d: read_stationary(root, d) for d in found}
        report["static_true"] = sum(len(v) for v in expected.values())
        report["static_exact_match"] = found == expected
    if p.data.source == "video":  # no OXTS: static by image motion, per clip
        report["static_by_clip"] = static_by_clip(root, result.static)
    write_json("metrics/filter.json", report)
    # what would otherwise stop a later stage, after pseudo-labelling and training: all of it, one line each
    problems = []
    if not result.train:
        problems.append(f"no training frame left from {train_file} ({len(listed_train)} listed; dropped: "
                        f"{result.dropped}); check data.raw_root ({root}) and the list, or filter.drop_static")
    else:
        drives = f" ({len(result.motions)} of the {len(drives_of(listed_train, listed_val))} drives of {lists} present)"
        if problem := batch_problem(len(result.train), p.train.batch_size, launch_processes(), root, drives):
            problems.append(problem)
    if problem := test_frames.problem(fetch_hint=p.data.source == "kitti"):
        problems.append(problem)
    if problems:
        for m in problems:
            print(f"error: {m}", file=sys.stderr)
        raise SystemExit(2)
    kitti.write_split(OUT / "train_files.txt", result.train)
    kitti.write_split(OUT / "val_files.txt", result.val)
    if not result.val:
        why = empty_val_reason(val_file, len(listed_val), result.not_kept["val"], f.val_fraction, len(result.train))
        print(f"warning: {OUT / 'val_files.txt'} has no line: {why}; nothing is validated on it (no validation "
              "mIoU in the pretrain stage)", file=sys.stderr)
    print(summary_line(report, OUT))


if __name__ == "__main__":
    main()
