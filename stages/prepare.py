"""prepare stage: the training frames, pseudo-labels and B_t resized once to the network size -> data/prepared.

For every (drive, camera) of the filtered training list, the targets and their neighbours as uint8 arrays
(``psdif.data.prepared``), so the training loader copies memory instead of decoding three full-size PNGs
per sample. Writes data/manifests/prepared_{images,labels,boundaries}.json; with ``prepare.enabled: false``
the manifests only say so and training decodes the PNGs. Uses every core (processes over frames). Arrays
kept from an earlier run are checked against its manifests first (``psdif.data.prepared.check_groups``).
"""

from __future__ import annotations

from pathlib import Path

from psdif.data.kitti import read_split
from psdif.data.images import ImageError
from psdif.data.prepared import KINDS, PreparedError, disabled_manifest, group_inputs, needed_frames, prepare_all
from psdif.io import cpu_count, progress_enabled, read_json
from psdif.paths import (BOUNDARIES, BOUNDARY_MANIFEST, LABELS, LABELS_MANIFEST, PREPARED, PREPARED_MANIFESTS,
                         RAW_TRAIN, TRAIN_LIST)
from psdif.stage import stage_args


def main(argv=None) -> None:
    p, _ = stage_args("prepare", argv)
    manifests = {k: Path(v) for k, v in PREPARED_MANIFESTS.items()}
    targets = read_split(TRAIN_LIST)
    # the content hash of every input frame (per kind): a group is re-prepared when one of its frames changed
    files = {kind: read_json(path).get("files", {}) if Path(path).exists() else {}
             for kind, path in (("images", RAW_TRAIN), ("labels", LABELS_MANIFEST), ("boundaries", BOUNDARY_MANIFEST))}
    if not p.prepare.enabled:
        Path(PREPARED).mkdir(parents=True, exist_ok=True)  # a dvc.yaml output: present, even when unused
        groups = needed_frames(targets)
        for kind in KINDS:  # training decodes these PNGs: the manifest changes when one of them does
            disabled_manifest(kind, manifests[kind], group_inputs(kind, groups, files[kind], p.data.img_ext))
        print("prepare.enabled is false: training decodes the PNGs")
        return
    try:
        out = prepare_all(p.data.raw_root, LABELS, BOUNDARIES, p.data.img_ext, p.data.height, p.data.width, targets,
                          Path(PREPARED), manifests, files, workers=cpu_count(), progress=progress_enabled())
    except (ImageError, PreparedError) as exc:  # a missing / unreadable frame, label or mask: named, with its fix
        raise SystemExit(f"error: {exc}") from None
    frames = sum(len(g["frames"]) for g in out["images"]["groups"].values())
    print(f"prepared {frames} frames of {len(out['images']['groups'])} drive cameras at "
          f"{p.data.height} x {p.data.width} under {PREPARED}")


if __name__ == "__main__":
    main()
