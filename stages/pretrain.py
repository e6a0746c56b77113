"""pretrain stage: the encoders' initial weights for ``model.encoder_weights: pretrain`` / ``model.pose_weights:
pretrain`` -> data/pretrain/msfan.pt, data/pretrain/resnet18.pt, metrics/pretrain.json (psdif/pretrain.py).

Each file named by a param with the token is trained (segmentation of the generator's ground truth on the
drives of the filtered train list; mIoU on the validation drives reported); a file no param names is a
placeholder (the paper preset: a few milliseconds), so the stage always writes its declared outputs.
Resumable: data/runs/pretrain-<key>/last.pt.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from psdif import pretrain as pt
from psdif.config import to_dict
from psdif.data import kitti
from psdif.io import params_hash, progress_enabled, read_json
from psdif.paths import RAW_TRAIN, TRAIN_LIST, VAL_LIST
from psdif.reports import write_report
from psdif.stage import stage_args

METRICS = Path("metrics/pretrain.json")


def main(argv=None) -> None:
    p, _ = stage_args("pretrain", argv)  # validated: the token only with generated data, one ResNet width
    use = pt.wanted(p.model)
    keys = [k for k, v in use.items() if v]
    values = {pt.ENCODER_KEY: p.model.encoder_weights, pt.POSE_KEY: p.model.pose_weights}
    for key, used in use.items():
        if not used:
            pt.write_placeholder(pt.output_path(key), key, values[key])
    if not keys:
        write_report(METRICS, {"pretrained": []})
        print("pretrain: no weights param names `pretrain`: placeholders written")
        return

    root, progress = Path(p.data.raw_root), progress_enabled()
    train_drives = {r.folder for r in kitti.read_split(Path(TRAIN_LIST))}
    val_drives = {r.folder for r in kitti.read_split(Path(VAL_LIST))} - train_drives
    size = (p.data.height, p.data.width)
    train = pt.load_samples(root, pt.drive_frames(root, train_drives), p.data.img_ext, *size, progress=progress)
    val = pt.load_samples(root, pt.drive_frames(root, val_drives), p.data.img_ext, *size) if val_drives else None
    digest = params_hash({"raw": read_json(RAW_TRAIN) if Path(RAW_TRAIN).exists() else None,
                          "train": sorted(train_drives), "size": size})
    key = pt.run_key(p.model, p.pretrain, keys, digest)
    run_dir = Path("data/runs") / f"pretrain-{params_hash(key)}"
    result = pt.pretrain(keys, p.model, p.pretrain, train, run_dir, digest, progress=progress)
    report = {"pretrained": keys, "steps": result.steps, "train_images": len(train.images),
              "cpu_minutes": round(result.cpu_seconds / 60, 2)}
    for k in keys:
        scores = pt.segmentation_scores(result.nets[k], val) if val is not None else {}
        meta = {"encoder": pt.ENCODERS[k], "param": k, "model": to_dict(p.model), "pretrain": to_dict(p.pretrain),
                "data": digest, "val": scores}
        pt.save_encoder(pt.output_path(k), result.states[k], meta)
        report[pt.ENCODERS[k]] = {"final_loss": result.losses[k][-1], "loss": result.losses[k], "val": scores}
        print(f"pretrain {pt.ENCODERS[k]}: {result.steps} steps, loss {result.losses[k][-1]:.3f}, "
              f"validation mIoU {scores.get('miou', float('nan')):.3f} -> {pt.output_path(k)}")
    write_report(METRICS, report)
    shutil.rmtree(run_dir, ignore_errors=True)  # complete: nothing to resume


if __name__ == "__main__":
    main()
