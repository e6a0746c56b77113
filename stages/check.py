"""check stage (runs on every `dvc repro`): validate params.yaml, then fingerprint the files params name.

It comes first in the pipeline, so a mistake in params.yaml (an unknown key, a value out of range, a weights
file that is missing, `imagenet` weights on an offline machine) stops the run before any other stage has
deleted an output. It writes data/manifests/inputs/params.json (the validated params) and one fingerprint
per file named in params (psdif.paths.INPUT_FINGERPRINTS): the SHA-256 of a weight file (under a second for
the 230 MB DeepLabv3+ checkpoint). (The KITTI copy and the Make3D folder are fingerprinted by the download
stage, in data/manifests/raw.json, after it has fetched what it was asked to.) A stage that
reads such a file depends on its fingerprint, so replacing the file at the same path reruns that stage, and
an unchanged file reruns nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from psdif.config import ParamsError, to_dict
from psdif.io import sha256_file, write_json
from psdif.models.weights import (ENCODER_KEY, POSE_KEY, PRETRAIN, PRETRAIN_FILES, cached_weights_file,
                                  check_model_weights)
from psdif.paths import INPUT_FINGERPRINTS, INPUTS
from psdif.stage import stage_args

def fingerprint(key: str, value, p) -> dict:
    """What a downstream stage needs to know about the input named by ``key``: its value and its content."""
    out = {"param": key, "value": value}
    if value is None:
        return out
    if value == PRETRAIN and key in PRETRAIN_FILES:  # made later by the pretrain stage, itself a dependency
        out["file"] = f"{PRETRAIN_FILES[key]} (the pretrain stage's output)"
    elif key in (ENCODER_KEY, POSE_KEY):
        size = p.model.msfan_size if key == ENCODER_KEY else None
        path = cached_weights_file(value, key, size)
        out["sha256"] = sha256_file(path) if path else f"not yet downloaded ({value})"
    elif key == "pseudolabel.checkpoint":
        out["sha256"] = sha256_file(value)
    return out


def main(argv=None) -> None:
    p, _ = stage_args("check", argv)
    try:
        check_model_weights(p.model)
        ckpt = p.pseudolabel.checkpoint
        if ckpt is not None and not Path(ckpt).is_file():
            raise ParamsError(f"pseudolabel.checkpoint={ckpt}: no such file; download "
                              "best_deeplabv3plus_resnet101_cityscapes_os16.pth (README, 'Real KITTI') and point "
                              "pseudolabel.checkpoint at it, or set it to null to train the in-pipeline teacher")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    raw = to_dict(p)
    write_json(Path(INPUTS) / "params.json", raw)
    for key, out in INPUT_FINGERPRINTS.items():
        section, name = key.split(".")
        write_json(out, fingerprint(key, raw[section][name], p))
    print("params.yaml: ok; input fingerprints in", INPUTS)


if __name__ == "__main__":
    main()
