"""Samples per second per core of the training loader, with the CPU time of each part of an item.

    python bench/loader.py                     # real KITTI frames (paper size) and generated ones (embedded size)
    python bench/loader.py --frames real --workers 15 --batches 40     # + a DataLoader with 15 workers (wall clock)

What is timed is the loader's work for one sample, in ONE thread, as CPU time (``time.thread_time``), so the
figure means "per core" even on a machine shared with other jobs: ``samples/s per core = 1 / CPU seconds
per sample``. A sample = ``TripletDataset.__getitem__`` (the item of ``psdif.train``'s loader, augmentation
drawn, flipped) plus its share of the collate into a batch of ``--batch``. Parts (CPU ms per sample):

- decode / resize: the three frames' PNG decode (PIL) and INTER_AREA resize (PNG source only);
- frames: the three frames copied out of the prepared array (prepared source only);
- labels / boundary: the three pseudo-labels and B_t of the target (decode + nearest resize, or the copy);
- augmentation: the float conversion and colour jitter where the loader did them before (``jitter in
  loader``: torchvision's functional ops per item, as ``TripletDataset`` did); 0 where they run on the device
  in the training step;
- collate: stacking into a batch; other: the rest (intrinsics, flip, draw, packing, Python).

Configurations, one line each: ``png + jitter in loader`` (how the loader worked before the prepare stage),
``png`` (jitter on the device), ``prepared`` (the prepare stage's arrays, jitter on the device: what training
runs). Frames: ``real`` = the KITTI drive 0001 sample (``$PSDIF_SHARED_DATA/kitti-mini``, 1242 x 375) at
the paper's 192 x 640, with generated piecewise-constant pseudo-labels of 19 classes at full size (the
sample has none); ``generated`` = a small mini-KITTI from the embedded generator (448 x 136) with its
semantic ground truth as pseudo-labels, at the embedded 64 x 160. Also prints the CPU time the jitter costs
in the training step when the device is this CPU (``jitter_batch``; on a GPU: bench/gpu.sh).

``--workers N`` adds a wall-clock figure of a real ``DataLoader`` (N persistent workers, batch ``--batch``,
prepared source) over ``--batches`` batches: what N cores of a GPU box deliver. ``--jitter-device cuda``
instead times the training step's jitter on the GPU (``--compile``: compiled) and checks it against the
CPU reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psdif.data import dataset as D  # noqa: E402
from psdif.data.augment import color_jitter, jitter_batch, sample_augmentation  # noqa: E402
from psdif.data.kitti import FrameRef  # noqa: E402
from psdif.data.prepared import PreparedFrames, prepare_all  # noqa: E402
from psdif.semantics.boundary import boundary_mask, write_boundary_png  # noqa: E402
from psdif.semantics.labels import label_path, read_label_png, write_label_png  # noqa: E402

KINDS = ("images", "labels", "boundaries")
REAL_FOLDER = "2011_09_26/2011_09_26_drive_0001_sync"


# ------------------------------------------------------------------------------------------ the frames

def plausible_labels(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A street-like label map: sky, buildings, road and sidewalk bands, and 30 rectangles of other classes
    (cars, poles, signs, vegetation, people); large flat regions, like a segmentation network's output."""
    lab = np.full((h, w), 2, np.uint8)
    lab[: h // 3] = 10
    lab[2 * h // 3:] = 0
    lab[2 * h // 3:, : w // 6] = 1
    for _ in range(30):
        c = rng.choice([13, 5, 7, 8, 11, 9, 4, 6])
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        lab[y: y + rng.integers(10, 120), x: x + rng.integers(5, 200)] = c
    return lab


def real_frames(kitti_mini: Path, work: Path):
    """(raw root, labels root, boundary root, targets, network size) for the real sample."""
    rng = np.random.default_rng(0)
    for side in "lr":
        for f in range(6):
            lab = plausible_labels(375, 1242, rng)
            write_label_png(label_path(work / "labels", REAL_FOLDER, side, f), lab)
            write_boundary_png(label_path(work / "boundaries", REAL_FOLDER, side, f), boundary_mask(lab, 5, 10))
    targets = [FrameRef(REAL_FOLDER, f, s) for s in "lr" for f in range(1, 5)]
    return kitti_mini, work / "labels", work / "boundaries", targets, (192, 640)


def generated_frames(work: Path):
    """A small mini-KITTI (embedded generator), its semantic ground truth as pseudo-labels, at 64 x 160."""
    from psdif.config import default_params
    from psdif.data.synthetic import generate_mini_kitti

    cfg = dataclasses.replace(default_params().synthetic, train_drives=1, val_drives=1, test_drives=1,
                              frames_per_drive=8, test_frames_per_drive=2, make3d_images=0)
    raw = work / "raw"
    folder = generate_mini_kitti(cfg, raw, work / "splits", progress=False)["drives"][0]
    for side, cam in (("l", 2), ("r", 3)):
        for f in range(8):
            lab = read_label_png(raw / "synthetic_gt" / folder.split("/")[-1] / f"semantic_0{cam}" / f"{f:010d}.png")
            write_label_png(label_path(work / "labels", folder, side, f), lab)
            write_boundary_png(label_path(work / "boundaries", folder, side, f), boundary_mask(lab, 5, 10))
    targets = [FrameRef(folder, f, s) for s in "lr" for f in range(1, 7)]
    return raw, work / "labels", work / "boundaries", targets, (64, 160)


# ------------------------------------------------------------------------------------------ timing

class Parts:
    """CPU time (this thread) spent inside wrapped functions, by part name; nested parts are not subtracted."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, part: str):
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.thread_time() - t
        setattr(owner, name, timed)
        return lambda: setattr(owner, name, fn)

    @contextmanager
    def installed(self, prepared: bool):
        undo = [self.wrap(D.TripletDataset, "_read_images", "frames"),
                self.wrap(D.TripletDataset, "_read_labels", "labels"),
                self.wrap(D.TripletDataset, "_read_boundary", "boundary")]
        if not prepared:
            undo += [self.wrap(D, "read_image", "decode"), self.wrap(D, "resize_image", "resize")]
        try:
            yield self
        finally:
            for u in undo:
                u()


def measure(ds, batch: int, repeat: int, jitter_in_loader: bool) -> tuple[float, dict[str, float]]:
    """(CPU seconds per sample, {part: CPU seconds per sample}) over ``repeat`` epochs of ``ds``."""
    parts = Parts()
    keys = [(e, i) for e in range(repeat) for i in range(len(ds))]
    for i in range(len(ds)):  # warm-up: file cache, lazy maps, imports
        ds[(0, i)]
    with parts.installed(ds.prepared is not None):
        start, pending, aug, coll = time.thread_time(), [], 0.0, 0.0
        for key in keys:
            item = ds[key]
            if jitter_in_loader:  # before: the loader made float images, jittered them (torchvision), int64 labels
                t = time.thread_time()
                images = item.images.permute(0, 3, 1, 2).float().div_(255.0)
                color_jitter(images, sample_augmentation(ds.seed, *key))
                item.labels.long()
                aug += time.thread_time() - t
            pending.append(item)
            if len(pending) == batch:
                t = time.thread_time()
                D.collate(pending)
                coll += time.thread_time() - t
                pending = []
        total = time.thread_time() - start
    n = len(keys)
    seconds = {k: v / n for k, v in parts.seconds.items()}
    if "decode" in seconds:  # report decode and resize instead of their sum
        seconds["frames"] -= seconds["decode"] + seconds["resize"]
    seconds.update(augmentation=aug / n, collate=coll / n)
    seconds["other"] = total / n - sum(seconds.values())
    return total / n, seconds


def describe(name: str, per_sample: float, parts: dict[str, float]) -> str:
    order = ["decode", "resize", "frames", "labels", "boundary", "augmentation", "collate", "other"]
    text = ", ".join(f"{k} {parts[k] * 1e3:.2f}" for k in order if k in parts)
    return f"{name}: {1 / per_sample:.1f} samples/s per core ({per_sample * 1e3:.2f} ms CPU/sample: {text})"


def device_jitter_cost(hw: tuple[int, int], batch: int, repeat: int) -> str:
    """CPU ms per sample of ``jitter_batch`` on this CPU (the per-item loop the CPU path runs; the batched form
    CUDA runs is memory-bound on a CPU and timed on the GPU by bench/gpu.sh)."""
    augs = [sample_augmentation(0, 0, i) for i in range(batch)]
    images = torch.rand(batch, 3, 3, *hw)
    factors = torch.tensor([a.jitter or (1.0, 1.0, 1.0, 0.0) for a in augs], dtype=torch.float64)
    order, on = torch.tensor([a.order for a in augs]), torch.tensor([a.jitter is not None for a in augs])
    jitter_batch(images, factors, order, on)
    t = time.thread_time()
    for _ in range(repeat):
        jitter_batch(images, factors, order, on)
    ms = (time.thread_time() - t) / repeat / batch * 1e3
    return (f"  the jitter, moved into the training step, costs {ms:.2f} ms/sample there on this CPU "
            f"({int(on.sum())} of {batch} items jittered; on a GPU: bench/gpu.sh)")


def device_jitter_check(device: torch.device, hw: tuple[int, int], batch: int, steps: int, compile: bool) -> str:
    """The jitter of the training step on ``device``: ms per batch (after warm-up) and the largest difference
    from the CPU reference (torchvision's ops, item by item) over 24 items, one per order."""
    import itertools

    orders = list(itertools.permutations(range(4)))
    rng = np.random.default_rng(0)
    factors = np.concatenate([rng.uniform(0.8, 1.2, (24, 3)), rng.uniform(-0.1, 0.1, (24, 1))], 1)
    images = torch.rand(24, 3, 3, *hw, generator=torch.Generator().manual_seed(0))
    args = [torch.tensor(factors, dtype=torch.float64), torch.tensor(orders), torch.ones(24, dtype=torch.bool)]
    fn = torch.compile(jitter_batch) if compile else jitter_batch
    out = fn(images.to(device), *(a.to(device) for a in args)).cpu()
    ref = torch.stack([color_jitter(images[n], D.Augmentation(False, tuple(factors[n]), orders[n])) for n in range(24)])
    diff = float((out - ref).abs().max())
    x, a = images[:batch].to(device), [t[:batch].to(device) for t in args]
    for _ in range(3):
        fn(x, *a)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        fn(x, *a)
    sync()
    ms = (time.perf_counter() - t) / steps * 1e3
    return (f"  jitter_batch on {device}{' compiled' if compile else ''}, batch {batch} x 3 frames {hw[0]}x{hw[1]}: "
            f"{ms:.2f} ms/batch; max |difference| from torchvision on the CPU {diff:.2e} (24 orders)")


def loader_rate(ds, workers: int, batch: int, batches: int) -> str:
    """Wall-clock samples/s of a DataLoader with ``workers`` persistent workers over the dataset, repeated."""
    from torch.utils.data import DataLoader

    from psdif.distributed import EpochSampler

    reps = max(1, -(-batches * batch // len(ds)))
    ds.frames = ds.frames * reps
    sampler = EpochSampler(len(ds), 0, 1, seed=0, with_epoch=True)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, collate_fn=D.collate, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                        pin_memory=torch.cuda.is_available())
    it = iter(loader)
    next(it)  # workers started
    t, n = time.perf_counter(), 0
    for b in it:
        n += b.batch_size
        if n >= batches * batch:
            break
    seconds = time.perf_counter() - t
    return (f"  DataLoader, {workers} workers, batch {batch}, pin_memory={torch.cuda.is_available()}: "
            f"{n / seconds:.0f} samples/s wall clock over {n} samples")


# ------------------------------------------------------------------------------------------ main

def run(which: str, work: Path, args) -> None:
    if which == "real":
        raw, labels, boundary, targets, hw = real_frames(Path(args.kitti), work)
        title = f"real KITTI 1242x375 -> {hw[0]}x{hw[1]}"
    else:
        raw, labels, boundary, targets, hw = generated_frames(work)
        title = f"generated 448x136 -> {hw[0]}x{hw[1]}"
    manifests = {k: work / f"prepared_{k}.json" for k in KINDS}
    t = time.process_time()
    prepare_all(str(raw), str(labels), str(boundary), "png", *hw, targets, work / "prepared", manifests,
                {k: "bench" for k in KINDS}, workers=1, progress=False)
    frames = sum(len(g["frames"]) for g in json.loads(manifests["images"].read_text())["groups"].values())
    prep_ms = (time.process_time() - t) / frames * 1e3

    def dataset(prepared):
        return D.TripletDataset(raw, targets, *hw, labels, boundary, "png", train=True, seed=0,
                                intrinsics="calib", prepared=PreparedFrames(manifests) if prepared else None)

    print(f"{title}, {len(targets)} targets x {args.repeat} epochs, batch {args.batch}, variant full "
          f"(labels and B_t read); prepare stage: {prep_ms:.1f} ms CPU per frame, once", flush=True)
    for name, prepared, jitter in (("png + jitter in loader (before)", False, True), ("png", False, False),
                                   ("prepared (after)", True, False)):
        per_sample, parts = measure(dataset(prepared), args.batch, args.repeat, jitter)
        print("  " + describe(name, per_sample, parts), flush=True)
    print(device_jitter_cost(hw, args.batch, max(1, args.repeat // 2)), flush=True)
    if args.workers is not None:
        print(loader_rate(dataset(True), args.workers, args.batch, args.batches), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", choices=["real", "generated", "both"], default="both")
    default_kitti = Path(os.environ.get("PSDIF_SHARED_DATA", REPO.parent / "shared" / "data")) / "kitti-mini"
    ap.add_argument("--kitti", default=str(default_kitti), help="KITTI raw sample with drive 0001 frames 0-5")
    ap.add_argument("--repeat", type=int, default=5, help="epochs over the targets (timed)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--workers", type=int, default=None, help="also time a DataLoader with this many workers")
    ap.add_argument("--batches", type=int, default=40, help="batches the DataLoader timing runs")
    ap.add_argument("--jitter-device", default=None, help="only time and check jitter_batch on this device (cuda)")
    ap.add_argument("--compile", action="store_true", help="with --jitter-device: torch.compile it")
    args = ap.parse_args(argv)
    if args.jitter_device:
        print(device_jitter_check(torch.device(args.jitter_device), (192, 640), args.batch, 20, args.compile))
        return 0
    torch.set_num_threads(1)
    which = ["real", "generated"] if args.frames == "both" else [args.frames]
    if "real" in which and not (Path(args.kitti) / REAL_FOLDER).is_dir():
        print(f"no KITTI sample at {args.kitti} (--kitti or PSDIF_SHARED_DATA): real frames skipped", flush=True)
        which.remove("real")
    load = os.getloadavg()
    print(f"bench/loader.py: one thread, CPU time per sample; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    for w in which:
        work = Path(tempfile.mkdtemp(prefix=f"psdif-loader-{w}-"))
        try:
            run(w, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
