"""Learning curve of one variant on the embedded default: Eigen abs_rel on the generated test drives
(relative to the flat reference row) every N steps, against training minutes.

Needs the pipeline's data (run `dvc repro export_gt` first: generated drives, pseudo-labels, boundaries,
data/eval/gt_depths.npz). Example, the figures in BENCHMARKS.md:

    OMP_NUM_THREADS=1 python bench/embedded_curve.py --variant full --steps 600 --every 50 --lr 1e-3 \
        --pose-width 0.25
"""
import argparse
import dataclasses
import time

from pathlib import Path
import torch
from torch.utils.data import DataLoader
from psdif.config import default_params
from psdif.variants import get_variant
from psdif.train import Networks, build_networks, make_forward_loss, make_optimizer, train_step
from psdif.data.dataset import TripletDataset, collate, frames_from_split
from psdif.evaluation.evaluate import evaluate_eigen, ConstantDisparity
from psdif.data import kitti
from psdif.evaluation.metrics import load_gt_depths, load_gt_frames

ap = argparse.ArgumentParser()
ap.add_argument("--variant", default="full"); ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--batch", type=int, default=8); ap.add_argument("--h", type=int, default=64); ap.add_argument("--w", type=int, default=224)
ap.add_argument("--lr", type=float, default=2e-4); ap.add_argument("--every", type=int, default=50)
ap.add_argument("--pose-width", type=float, default=None); ap.add_argument("--baseline-width", type=float, default=None)
ap.add_argument("--msfan", default=None); ap.add_argument("--dec", default=None); ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--tag", default="")
ap.add_argument("--decay-at", type=int, default=0, help="multiply the lr by 0.1 after this many steps (0 = never)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
p = default_params()
m = p.model
if a.pose_width: m = dataclasses.replace(m, pose_width=a.pose_width)
if a.baseline_width: m = dataclasses.replace(m, baseline_width=a.baseline_width)
if a.msfan: m = dataclasses.replace(m, msfan_size=a.msfan)
if a.dec: m = dataclasses.replace(m, decoder_channels=[int(x) for x in a.dec.split(",")])
p = dataclasses.replace(p, model=m, data=dataclasses.replace(p.data, height=a.h, width=a.w),
                        train=dataclasses.replace(p.train, lr=a.lr, batch_size=a.batch))
v = get_variant(a.variant)
torch.manual_seed(0)
nets = Networks(*build_networks(v, p.model)).train()
opt = make_optimizer(nets, a.lr, torch.device("cpu"))
fl = make_forward_loss(nets, p, v)
frames = frames_from_split(p.data.splits_dir, p.data.train_split, "train")
ds = TripletDataset(p.data.raw_root, frames, a.h, a.w, "data/pseudolabels", "data/boundaries", "png", True, 0,
                    intrinsics=p.data.intrinsics, need_labels=v.seg or v.metric_loss, need_boundary=v.metric_loss)
test = [kitti.parse_split_line(line) for line in load_gt_frames("data/eval/gt_depths.npz")[0]]  # what export_gt covered
gts = load_gt_depths("data/eval/gt_depths.npz")
flat = evaluate_eigen(ConstantDisparity(), Path(p.data.raw_root), test, gts, a.h, a.w, "png", p.eval, (0.1, 100))[0]["abs_rel"]
step, t0, train_t = 0, time.time(), 0.0
epoch = 0
log = []
while step < a.steps:
    ds.set_epoch(epoch)
    g = torch.Generator().manual_seed(epoch)
    for batch in DataLoader(ds, batch_size=a.batch, shuffle=True, collate_fn=collate, drop_last=True, generator=g):
        if a.decay_at and step == a.decay_at:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        ts = time.time()
        terms = train_step(fl, batch, opt)
        train_t += time.time() - ts
        step += 1
        if step % a.every == 0 or step == a.steps:
            nets.eval()
            r = evaluate_eigen(nets.depth, Path(p.data.raw_root), test, gts, a.h, a.w, "png", p.eval, (0.1, 100))[0]
            nets.train()
            row = dict(step=step, abs_rel=round(r["abs_rel"], 4), ratio=round(r["abs_rel"] / flat, 3),
                       a1=round(r["a1"], 3), loss=round(float(terms["total"]), 4), train_min=round(train_t / 60, 2))
            print(a.tag, row, flush=True); log.append(row)
        if step >= a.steps: break
    epoch += 1
print(a.tag, "flat", round(flat, 4), "wall_min", round((time.time() - t0) / 60, 2))
