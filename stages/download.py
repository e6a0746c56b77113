"""download stage: generate the mini-KITTI (embedded default) or fetch KITTI raw; write data/manifests/raw.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from psdif.data import kitti
from psdif.stage import stage_args
from psdif.io import progress_enabled
from psdif.io import params_hash, tree_manifest, write_json

MANIFEST = Path("data/manifests/raw.json")
MAKE3D_SYNTH = Path("data/make3d_synth")


def main(argv=None) -> None:
    p, _ = stage_args("download", argv)
    root, splits = Path(p.data.raw_root), Path(p.data.splits_dir)
    progress = progress_enabled()
    if p.data.source == "synthetic":
        from psdif.data.synthetic import generate_make3d, generate_mini_kitti

        summary = generate_mini_kitti(p.synthetic, root, splits, progress=progress)
        if p.synthetic.make3d_images:
            generate_make3d(p.synthetic, MAKE3D_SYNTH)
        # deterministic content only (no timings): an unchanged tree must give a byte-identical manifest, so
        # that this always-run stage reruns nothing downstream
        summary = {k: v for k, v in summary.items() if k not in ("seconds", "reused")}
        manifest = {"source": "synthetic", "params": params_hash(dataclasses.asdict(p.synthetic)),
                    "summary": summary, "files": tree_manifest(root),
                    "make3d": tree_manifest(MAKE3D_SYNTH) if MAKE3D_SYNTH.is_dir() else {}}
    else:
        from psdif.data.download import download_kitti, fetch_splits

        fetch_splits(p.download.splits_url, splits, p.download.retries, progress)
        urls = (splits / "kitti_archives_to_download.txt").read_text().split()
        finished = download_kitti(urls, root, p.download.retries,
                                  p.download.jpeg_quality if p.download.jpeg else None, progress)
        drives = sorted({f.folder for name in ("eigen_zhou/train_files.txt", "eigen_zhou/val_files.txt",
                                                f"{p.data.test_split}/test_files.txt")
                         for f in kitti.read_split(splits / name)})
        missing = [d for d in drives if not (root / d).is_dir()]
        if missing:
            raise SystemExit(f"error: {len(missing)} drives of the splits are missing under {root}, "
                             f"e.g. {missing[0]}; re-run the download stage")
        manifest = {"source": "kitti", "archives": finished,
                    "frames": {d: len(kitti.list_frames(root, d, 2)) for d in drives}}
    write_json(MANIFEST, manifest)
    print(f"wrote {MANIFEST}")


if __name__ == "__main__":
    main()
