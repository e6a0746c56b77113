"""export_gt stage: GT depth of the test frames on disk -> data/eval/gt_depths.npz, metrics/export_gt.json.
Eigen protocol: projected from their velodyne scans (design.md §4.3, vel_depth=True); eigen_benchmark
(``data.test_protocol``): KITTI's annotated depth PNGs, in place or under ``data.depth_annotated_root``; photometric
(your own videos without depth GT): no depth, only the frames the evaluate stages score (both neighbours on disk).

A listed test frame whose drive, image, scan or calibration is not on disk (a partial KITTI copy) is skipped
and counted, never an error; the GT file holds the lines of the frames it covers, which the evaluate and
figures stages read, and metrics/export_gt.json says how many were listed, used and missing (and why).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from psdif.data import kitti
from psdif.data.ondisk import evaluable_test_frames, list_paths
from psdif.evaluation.metrics import save_gt_depths
from psdif.io import progress_enabled
from psdif.paths import EXPORT_GT_REPORT, GT_DEPTHS
from psdif.process import progress_bar
from psdif.reports import write_report
from psdif.stage import stage_args


def main(argv=None) -> None:
    p, _ = stage_args("export_gt", argv)
    root = Path(p.data.raw_root)
    test_list = list_paths(p.data.splits_dir, p.data.train_split, p.data.test_split)["test"]
    try:
        frames = evaluable_test_frames(root, test_list, p.data.img_ext, p.data.protocol,  # the filter stage
                                       p.data.depth_annotated_root)                        # checks the same
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc} (data.splits_dir / data.test_split)") from None
    listed, used, missing = frames.listed, frames.used, frames.missing
    report = {"test_split": p.data.test_split, **frames.report()}  # with "protocol"
    write_report(EXPORT_GT_REPORT, report)
    if not used:
        raise SystemExit(f"error: {frames.problem(fetch_hint=p.data.source == 'kitti')}")
    if missing:
        why = "cannot be scored (no neighbours)" if p.data.protocol == "photometric" else "are not on disk"
        print(f"warning: {len(missing)} of {len(listed)} test frames {why} and are skipped "
              f"({report['missing_by_reason']}); first: {report['first_missing'][0]}", file=sys.stderr)
    try:
        depths = [test_gt(p, root, f) for f in progress_bar(used, desc="export GT", unit="frame",
                                                             disable=not progress_enabled())]
    except kitti.KittiError as exc:
        raise SystemExit(f"error: {exc}") from None
    save_gt_depths(GT_DEPTHS, depths, [f.line() for f in used], len(listed), p.data.protocol)
    what = "no depth GT: scored photometrically" if p.data.protocol == "photometric" else f"{p.data.protocol} GT"
    print(f"wrote {GT_DEPTHS}: {len(used)} of {len(listed)} listed test frames ({what})")


def test_gt(p, root: Path, ref: kitti.FrameRef):
    """GT depth [H, W] m of one test frame: KITTI's annotated PNG (eigen_benchmark) or its projected scan; none
    (an empty map) under the photometric protocol (your own videos without depth GT)."""
    if p.data.protocol == "photometric":
        return np.zeros((0, 0), np.float32)
    if p.data.protocol == "eigen_benchmark":
        return kitti.read_improved_depth(kitti.improved_depth_path(root, p.data.depth_annotated_root, ref))
    return kitti.generate_depth_map(kitti.calib_dir(root, ref.folder), kitti.velodyne_path(root, ref.folder, ref.frame),
                                    cam=ref.cam, vel_depth=True)


if __name__ == "__main__":
    main()
