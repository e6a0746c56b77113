"""filter stage: drop static frames, write <splits_dir>/<train_split>/{train,val}_files.txt, metrics/filter.json."""

from __future__ import annotations

from pathlib import Path

from psdif.data import kitti
from psdif.cli import stage_args
from psdif.io import progress_enabled
from psdif.io import write_json
from psdif.data.static_filter import agreement, filter_drives, read_drive_roles


def read_stationary(root: Path, folder: str) -> list[int]:
    """The generator's ground truth: frame indices it drove at zero speed."""
    path = root / "synthetic_gt" / folder.split("/")[-1] / "stationary.txt"
    if not path.exists():
        raise kitti.KittiError(f"{path}: generator ground truth missing; re-run the download stage")
    return sorted(int(x) for x in path.read_text().split())


def main(argv=None) -> None:
    p, _ = stage_args("filter", argv)
    root, splits = Path(p.data.raw_root), Path(p.data.splits_dir)
    if p.data.source == "synthetic":
        roles = read_drive_roles(splits / "synthetic_drives.txt")
    else:
        # the drives of the published eigen_zhou lists; frames go to val by a fixed hash
        published = kitti.read_split(splits / "eigen_zhou" / "train_files.txt") + \
            kitti.read_split(splits / "eigen_zhou" / "val_files.txt")
        test_drives = {f.folder for f in kitti.read_split(splits / p.data.test_split / "test_files.txt")}
        roles = {f.folder: "trainval" for f in published if f.folder not in test_drives}
    result = filter_drives(root, roles, p.filter.min_speed, p.filter.min_image_motion,
                           p.filter.val_fraction, p.data.img_ext, progress=progress_enabled())
    out = splits / p.data.train_split
    kitti.write_split(out / "train_files.txt", result.train)
    kitti.write_split(out / "val_files.txt", result.val)

    report = {
        "drives": len(result.motions),
        "train_lines": len(result.train),
        "val_lines": len(result.val),
        "static_frames": sum(len(m.static) for m in result.motions),
    }
    if p.data.source == "synthetic":
        expected = {d: read_stationary(root, d) for d, role in roles.items() if role != "test"}
        found = result.static
        report["static_true"] = sum(len(v) for v in expected.values())
        report["static_exact_match"] = found == expected
    else:
        report["eigen_zhou"] = agreement(result.train + result.val, published)
    write_json("metrics/filter.json", report)
    print(report)


if __name__ == "__main__":
    main()
