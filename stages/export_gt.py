"""export_gt stage: Eigen GT depth of every test frame from its velodyne scan (design.md §4.3, vel_depth=True)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from psdif.data import kitti
from psdif.stage import stage_args
from psdif.io import progress_enabled
from psdif.evaluation.metrics import save_gt_depths

OUT = Path("data/eval/gt_depths.npz")


def main(argv=None) -> None:
    p, _ = stage_args("export_gt", argv)
    root = Path(p.data.raw_root)
    frames = kitti.read_split(Path(p.data.splits_dir) / p.data.test_split / "test_files.txt")
    depths = [kitti.generate_depth_map(kitti.calib_dir(root, f.folder), kitti.velodyne_path(root, f.folder, f.frame),
                                       cam=f.cam, vel_depth=True)
              for f in tqdm(frames, desc="export GT", unit="frame", disable=not progress_enabled())]
    save_gt_depths(OUT, depths)
    print(f"wrote {OUT}: {len(depths)} frames")


if __name__ == "__main__":
    main()
