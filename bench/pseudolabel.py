"""Pseudo-labelling throughput: the CPU work per frame, the DeepLabv3+ on the device, and the whole pipeline.

    python bench/pseudolabel.py                                   # CPU parts on the real frames, small model run
    python bench/pseudolabel.py --device cuda --precision bf16 --frames 800 --workers 15   # on a GPU box

Three figures, one line each:

1. CPU per frame, one thread, ``time.thread_time`` (so "per core" on a shared machine): decoding a KITTI
   frame (1242 x 375 PNG of ``$PSDIF_SHARED_DATA/kitti-mini``), counting and encoding its label PNG (a
   street-like label map of that size, ``psdif.semantics.labels.write_label_png``) = what the worker
   processes and writer threads of ``label_frames`` do per frame.
2. The model alone: ``predict_labels`` of the Cityscapes DeepLabv3+ / ResNet-101 (random weights, or
   ``--checkpoint``) on batches of ``--batch`` frames at ``--size`` (default 375x1242), frames/s after warm-up.
3. The pipeline: ``label_frames`` with ``--workers`` decoding processes and writer threads over ``--frames``
   frames (the sample's frames, repeated), wall clock from start to the last PNG written; then the hours
   the ~94k frames of KITTI raw (both cameras) would take at that rate.

With ``--compare fp32`` the labels of ``--precision`` are compared with fp32 ones on the sample frames (share
of pixels with the same class; random weights make near-ties common, so give ``--checkpoint`` for the real
figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psdif.data.images import read_image  # noqa: E402
from psdif.data.kitti import FrameRef  # noqa: E402
from psdif.semantics.labels import label_frames, predict_labels, write_label_png  # noqa: E402

KITTI_RAW_FRAMES = 94_000  # both cameras of the KITTI raw drives (about 47k stereo pairs)
FOLDER = "2011_09_26/2011_09_26_drive_0001_sync"


def sample_paths(kitti: Path) -> list[Path]:
    return sorted((kitti / FOLDER).glob("image_0[23]/data/*.png"))


def cpu_per_frame(paths: list[Path], repeat: int) -> str:
    """Decode, count + encode: CPU ms per frame in this thread."""
    sys.path.insert(0, str(REPO / "bench"))
    from loader import plausible_labels

    rng = np.random.default_rng(0)
    labels = [plausible_labels(375, 1242, rng) for _ in range(4)]
    out = Path(tempfile.mkdtemp(prefix="psdif-pl-"))
    try:
        read_image(paths[0])
        t = time.thread_time()
        for _ in range(repeat):
            for p in paths:
                read_image(p)
        decode = (time.thread_time() - t) / (repeat * len(paths))
        t = time.thread_time()
        n = repeat * len(paths)
        for i in range(n):
            lab = labels[i % len(labels)]
            np.bincount(lab.ravel(), minlength=19)
            write_label_png(out / f"{i % 8}.png", lab)
        encode = (time.thread_time() - t) / n
        png_kb = np.mean([(out / f"{i}.png").stat().st_size for i in range(min(n, 8))]) / 1024
    finally:
        shutil.rmtree(out, ignore_errors=True)
    both = decode + encode
    return (f"CPU per frame (one thread): decode {decode * 1e3:.2f} ms + count and encode the label PNG "
            f"{encode * 1e3:.2f} ms ({png_kb:.0f} KB) = {both * 1e3:.2f} ms: {1 / both:.0f} frames/s per core")


def build_model(checkpoint: str | None):
    from psdif.semantics.deeplab import CityscapesDeepLabV3Plus, load_cityscapes_deeplab

    if checkpoint:
        return load_cityscapes_deeplab(checkpoint)
    torch.manual_seed(0)
    return CityscapesDeepLabV3Plus().eval()


def model_rate(model, device: torch.device, precision: str, batch: int, size: tuple[int, int], steps: int) -> float:
    images = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    predict_labels(model, images, batch, device, precision)  # warm-up (cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        predict_labels(model, images, batch, device, precision)
    return batch * steps / (time.perf_counter() - t)


class RepeatedFrames:
    """image_loader for label_frames: frame i is the sample's frame i mod n, decoded (picklable)."""

    def __init__(self, paths: list[Path], size: tuple[int, int] | None):
        self.paths, self.size = [str(p) for p in paths], size

    def __call__(self, ref: FrameRef) -> np.ndarray:
        image = read_image(self.paths[ref.frame % len(self.paths)])
        if self.size is not None and image.shape[:2] != self.size:
            image = np.ascontiguousarray(image[: self.size[0], : self.size[1]])
        return image


def pipeline_rate(model, device, precision: str, batch: int, paths, frames: int, workers: int,
                  size: tuple[int, int] | None) -> float:
    out = Path(tempfile.mkdtemp(prefix="psdif-pl-out-"))
    refs = [FrameRef("2011_09_26/bench_sync", i, "l") for i in range(frames)]
    try:
        t = time.perf_counter()
        label_frames(lambda imgs: predict_labels(model, imgs, batch, device, precision), refs,
                     RepeatedFrames(paths, size), out, batch, progress=False, workers=workers)
        seconds = time.perf_counter() - t
        assert len(list(out.rglob("*.png"))) == frames
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return frames / seconds


def agreement(model, device, precision: str, other: str, batch: int, paths, size) -> float:
    loader = RepeatedFrames(paths, size)
    images = np.stack([loader(FrameRef(FOLDER, i, "l")) for i in range(min(len(paths), 2 * batch))])
    a = predict_labels(model, images, batch, device, precision)
    b = predict_labels(model, images, batch, device, other)
    return float((a == b).mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_kitti = Path(os.environ.get("PSDIF_SHARED_DATA", REPO.parent / "shared" / "data")) / "kitti-mini"
    ap.add_argument("--kitti", default=str(default_kitti))
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compare", default=None, choices=["fp32", "bf16", "fp16"],
                    help="also report the share of pixels labelled as with this precision")
    ap.add_argument("--checkpoint", default=None, help="the Cityscapes checkpoint (default: random weights)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", default="375x1242", help="HxW of the model-alone timing (frames are cropped to it)")
    ap.add_argument("--steps", type=int, default=10, help="timed batches of the model-alone figure")
    ap.add_argument("--frames", type=int, default=0, help="frames of the pipeline figure (0: skip it)")
    ap.add_argument("--workers", type=int, default=0, help="decoding processes / writer threads of the pipeline")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the sample for the CPU figure")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = tuple(int(v) for v in args.size.lower().split("x"))
    paths = sample_paths(Path(args.kitti))
    if not paths:
        print(f"no KITTI sample under {args.kitti} (--kitti or PSDIF_SHARED_DATA)", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print(f"bench/pseudolabel.py on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"{os.cpu_count()} cores, load average {load[0]:.2f}", flush=True)
    print("  " + cpu_per_frame(paths, args.repeat), flush=True)
    model = build_model(args.checkpoint)
    crop = None if size == (375, 1242) else size
    rate = model_rate(model, device, args.precision, args.batch, size, args.steps)
    weights = "checkpoint" if args.checkpoint else "random weights"
    print(f"  DeepLabv3+/ResNet-101 ({weights}) alone, {args.precision}, batch {args.batch}, {size[0]}x{size[1]}: "
          f"{rate:.1f} frames/s", flush=True)
    if args.frames:
        rate = pipeline_rate(model, device, args.precision, args.batch, paths, args.frames, args.workers, crop)
        hours = KITTI_RAW_FRAMES / rate / 3600
        print(f"  label_frames pipeline, {args.workers} workers, {args.frames} frames {size[0]}x{size[1]}: "
              f"{rate:.1f} frames/s wall clock -> {hours:.2f} h for {KITTI_RAW_FRAMES} frames on one device", flush=True)
    if args.compare:
        share = agreement(model, device, args.precision, args.compare, args.batch, paths, crop)
        print(f"  labels {args.precision} vs {args.compare}: {100 * share:.3f}% of pixels agree ({weights})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
