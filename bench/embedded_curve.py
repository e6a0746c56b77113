"""Learning curves of the Table-3 variants on the embedded default: Eigen abs_rel on the generated test drives
(as a fraction of the flat row, a constant disparity) every N steps, against the CPU time of training.

It trains through ``psdif.train.train`` itself (the pipeline's sampler, augmentation, lr schedule, losses),
evaluating in its ``on_step`` hook, with the params of params.yaml (the embedded preset) changed by ``-S``.
Needs the pipeline's data: ``dvc repro export_gt prepare pretrain`` (generated drives, pseudo-labels,
boundaries, the prepared frames the train stages read, data/eval/gt_depths.npz, and data/pretrain/*.pt for
``--init pretrain``; other files through ``-S model.encoder_weights=PATH``). BENCHMARKS.md's figures came from:

    OMP_NUM_THREADS=1 python bench/embedded_curve.py --variants baseline,msfan,msfan_seg,msfan_seg_psdifm,full \\
        --init none,pretrain --steps 600 --every 50 --out bench/results/curve.jsonl

One JSON line per evaluation: variant, init, step, abs_rel, ratio (abs_rel / flat), a1, train CPU seconds
(process time of the training steps only, evaluation excluded), load average. CPU time, not wall time:
the machine it was written on is shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psdif.config import load_params, parse_params, to_dict  # noqa: E402
from psdif.data import kitti  # noqa: E402
from psdif.evaluation.evaluate import ConstantDisparity, evaluate_eigen  # noqa: E402
from psdif.evaluation.metrics import load_gt_depths, load_gt_frames  # noqa: E402
from psdif.paths import BOUNDARIES, GT_DEPTHS, LABELS, PREPARED_MANIFESTS, TRAIN_LIST  # noqa: E402
from psdif.train import train  # noqa: E402
from psdif.variants import VARIANTS, get_variant  # noqa: E402


def with_overrides(params, sets: list[str]):
    """params with ``section.key=value`` overrides (YAML values), validated like params.yaml."""
    raw = to_dict(params)
    for item in sets:
        key, _, value = item.partition("=")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    return parse_params(raw)


def curve(params, variant: str, every: int, test, gts, flat: float, tag: dict, out) -> list[dict]:
    """Train ``variant`` to params.train.max_steps, evaluating every ``every`` steps."""
    rows, eval_cpu = [], [0.0]
    dc = params.data
    disp_range = (params.model.min_depth, params.model.max_depth)
    start = time.process_time()
    total = params.train.max_steps

    def on_step(step: int, nets) -> None:
        if step % every and step != total:
            return
        t0 = time.process_time()
        was = nets.training
        nets.eval()
        with torch.no_grad():
            r = evaluate_eigen(nets.depth, Path(dc.raw_root), test, gts, dc.height, dc.width, dc.img_ext,
                               params.eval, disp_range)[0]
        nets.train(was)
        eval_cpu[0] += time.process_time() - t0
        row = {**tag, "variant": variant, "step": step, "abs_rel": round(r["abs_rel"], 4),
               "ratio": round(r["abs_rel"] / flat, 3), "a1": round(r["a1"], 3),
               "train_cpu_s": round(time.process_time() - start - eval_cpu[0], 1),
               "load": round(os.getloadavg()[0], 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        # the prepared frames when the prepare stage has run (as the train stage reads them), else the PNGs
        prepared = PREPARED_MANIFESTS if all(Path(m).exists() for m in PREPARED_MANIFESTS.values()) else None
        train(params, get_variant(variant), Path(tmp), labels_root=Path(LABELS), boundary_root=Path(BOUNDARIES),
              frames=kitti.read_split(Path(TRAIN_LIST)), progress=False, on_step=on_step, prepared=prepared)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated Table-3 variants")
    ap.add_argument("--init", default="pretrain", help="comma-separated: none (random encoders) and/or pretrain "
                    "(the params' model.encoder_weights / pose_weights)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("-S", "--set", action="append", default=[], help="param override, e.g. train.lr=0.002")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="a label copied into every row")
    ap.add_argument("--out", default="", help="append the rows (JSON lines) to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    base = with_overrides(load_params(REPO / "params.yaml"), a.set + [f"train.max_steps={a.steps}"])
    dc = base.data
    test = [kitti.parse_split_line(line) for line in load_gt_frames(GT_DEPTHS)[0]]  # what export_gt covered
    gts = load_gt_depths(GT_DEPTHS)
    disp_range = (base.model.min_depth, base.model.max_depth)
    flat = evaluate_eigen(ConstantDisparity(), Path(dc.raw_root), test, gts, dc.height, dc.width, dc.img_ext,
                          base.eval, disp_range)[0]["abs_rel"]
    print(json.dumps({"flat_abs_rel": round(flat, 4), "test_frames": len(test)}), flush=True)
    for init in a.init.split(","):
        params = base if init == "pretrain" else dataclasses.replace(
            base, model=dataclasses.replace(base.model, encoder_weights=None, pose_weights=None))
        for variant in a.variants.split(","):
            tag = {"tag": a.tag, "init": init, "lr": params.train.lr, "hw": f"{dc.height}x{dc.width}",
                   "batch": params.train.batch_size, "flat": round(flat, 4)}
            curve(params, variant, a.every, test, gts, flat, tag, a.out)


if __name__ == "__main__":
    main()
