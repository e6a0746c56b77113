"""boundary stage: B_t (Z x Z neighbourhood, threshold T) for every pseudo-label -> data/boundaries.

1-bit PNGs in the same KITTI layout as data/pseudolabels, one process per core; the Figure-4 panel of one
frame goes to metrics/figures/boundary_fig4.png; data/manifests/boundaries.json lists the files. Masks kept
from an earlier run are checked against that manifest first; missing or changed ones are recomputed.
"""

from __future__ import annotations

from pathlib import Path

from psdif.data.images import read_image
from psdif.semantics.boundary import boundary_figure, boundary_frames, outdated_masks, record_mask_sources
from psdif.stage import stage_args
from psdif.io import join_under, progress_enabled
from psdif.io import (check_tree, cpu_count, params_hash, prepare_output_tree, previous_record, read_json,
                      tree_manifest, write_json)
from psdif.semantics.labels import read_label_png

LABELS = Path("data/pseudolabels")
OUT = Path("data/boundaries")
LABELS_MANIFEST = Path("data/manifests/pseudolabels.json")
MANIFEST = Path("data/manifests/boundaries.json")
FIGURE = Path("metrics/figures/boundary_fig4.png")


def main(argv=None) -> None:
    p, _ = stage_args("boundary", argv)
    b = p.boundary
    if not LABELS_MANIFEST.exists():
        raise SystemExit(f"error: {LABELS_MANIFEST} not found; run the pseudolabel stage first: dvc repro pseudolabel")
    label_manifest = read_json(LABELS_MANIFEST)
    labels = sorted(label_manifest["files"])
    # what the masks depend on (the figure's T and Z lists do not: changing them redraws Figure 4 only)
    config = params_hash({"boundary": {"z": b.z, "t": b.t}, "labels": label_manifest["config"]})
    prepare_output_tree(OUT, config, "recomputing every mask")
    # every kept mask is checked against the previous manifest (and the label it was made from): a missing or
    # changed one is recomputed
    outdated = outdated_masks(OUT, label_manifest["files"])
    print(check_tree(OUT, labels, previous_record(MANIFEST, config), "**/*.png", outdated=outdated)
          .report("boundary", "mask", "recomputing"))
    masks = [join_under(OUT, f, what="boundary mask") for f in labels]  # never outside data/boundaries
    info = boundary_frames([LABELS / f for f in labels], masks, read_label_png, b.z, b.t,
                           progress=progress_enabled(), workers=cpu_count())  # every core
    computed = info.pop("computed")  # not in the manifest: a rerun that recomputes nothing writes the same bytes
    if labels:  # Figure 4: the middle frame of the list, with its camera image
        rel = Path(labels[len(labels) // 2])
        image = Path(p.data.raw_root) / rel.with_suffix(f".{p.data.img_ext}")
        boundary_figure(read_image(image), read_label_png(LABELS / rel), b.figure_t, b.figure_z,
                        FIGURE, z=b.z, t=b.t)
    record_mask_sources(OUT, label_manifest["files"])
    write_json(MANIFEST, {"config": config, **info, "files": tree_manifest(OUT, "**/*.png")})
    summary = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                        for k, v in info.items())
    print(f"wrote {MANIFEST}: {summary} ({computed} masks computed in this run)")


if __name__ == "__main__":
    main()
