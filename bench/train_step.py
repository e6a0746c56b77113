"""Throughput of one full PSDIF training step on synthetic inputs (design.md §5 targets, design.md §7 interface).

    python bench/train_step.py --variant full --batch 12 --height 192 --width 640 [--amp] [--compile]

One step = the real step of ``psdif.train`` (:func:`psdif.train.train_step` on
:func:`psdif.train.make_forward_loss`): depth net on the target frame, pose net on the two pairs (t-1, t),
(t, t+1), all losses of ``psdif.losses.compute_losses`` (photometric over 4 scales x 2 sources with the
automask, smoothness, cross-entropy and the boundary metric loss, as the variant enables them), backward,
Adam step over both networks. Inputs: one synthetic :class:`psdif.data.batch.PackedBatch` already on the device,
as the loader delivers it (uint8 random images with the drawn colour jitter of the items, unpacked and
jittered inside the timed step; piecewise-constant random labels shifted from frame to frame, B_t computed
from the target labels with ``boundary.z`` / ``boundary.t``); data loading and the loop's logging
bookkeeping are not timed.

Model: ``--msfan-size w18`` (default) = the ``model`` section of ``psdif/presets/paper.yaml`` (HRNet-W18,
decoder widths [16, 32, 64, 128, 256], baseline and pose ResNet-18 at width 1.0); any other size = the
embedded preset's ``model`` section with ``msfan_size`` replaced. Weights random (no downloads).

Timing: ``--warmup`` untimed steps, then ``--steps`` timed steps; on CUDA between two CUDA events after a
synchronize, on the CPU with ``time.perf_counter``. Peak memory: ``torch.cuda.max_memory_allocated`` on
CUDA, the process's peak resident set (``ru_maxrss``, including the Python / torch libraries) on the CPU.
``--amp``: bf16 autocast (CUDA only, as ``train.amp``; the losses run in fp32); without it "fp32" means
PyTorch's defaults (cuDNN may use TF32 in convolutions; ``--no-tf32`` forbids it). ``--compile``:
``torch.compile`` of the forward + loss function exactly as ``train.compile`` does (AOTAutograd compiles the
backward with it; the fused Adam step stays eager); ``--compile-mode`` picks the mode (e.g.
``reduce-overhead`` for CUDA graphs). ``--inference`` also times batch-1 depth inference
(``forward_depth``: scale-0 sigmoid disparity, eval mode, ``torch.inference_mode``).

Prints e.g. ``full 192x640 batch 12 fp32 eager cuda: 312.4 samples/s, 38.4 ms/step, peak 9.8 GiB``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psdif.data.batch import FRAME_IDS, PackedBatch  # noqa: E402
from psdif.data.augment import NO_JITTER, sample_augmentation  # noqa: E402
from psdif.semantics.boundary import boundary_mask_torch  # noqa: E402
from psdif.config import Params, default_params, load_params, preset_path  # noqa: E402
from psdif.data.dataset import KITTI_NORMALISED_K  # noqa: E402
from psdif.train import (Networks, autocast_context, build_networks, make_forward_loss,  # noqa: E402
                         make_optimizer, train_step)
from psdif.variants import VARIANTS, get_variant  # noqa: E402

LABEL_CELL = 16  # pixels per side of the constant-label cells of the synthetic label maps
SHIFT = 3  # pixels the synthetic label map moves per frame


def bench_params(msfan_size: str) -> Params:
    """Parameters of the benchmarked model: the paper preset for w18, the embedded one (resized MSFAN) else.

    Checkpoint paths are cleared: the weights are random, nothing is read from disk.
    """
    params = load_params(preset_path("paper")) if msfan_size == "w18" else default_params()
    model = dataclasses.replace(params.model, msfan_size=msfan_size, encoder_weights=None, pose_weights=None)
    return dataclasses.replace(params, model=model)


def synthetic_labels(batch: int, height: int, width: int, num_classes: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Piecewise-constant random labels ``[batch, 3, height, width]`` int64 in [0, num_classes), frames in
    FRAME_IDS order: the target has one class per LABEL_CELL x LABEL_CELL cell (nearest upsampling), so B_t
    is a band along the cell edges; frame i is the target shifted by SHIFT * i pixels along the width (a
    camera moving sideways), so part of B_t is semantically inconsistent (B_ct) and part is not (B_gt)."""
    gh, gw = math.ceil(height / LABEL_CELL), math.ceil(width / LABEL_CELL)
    grid = torch.randint(0, num_classes, (batch, gh, gw), generator=generator)
    target = grid.repeat_interleave(LABEL_CELL, 1).repeat_interleave(LABEL_CELL, 2)[..., :height, :width]
    return torch.stack([target.roll(SHIFT * i, dims=-1) for i in FRAME_IDS], 1).contiguous()


def synthetic_batch(batch: int, height: int, width: int, params: Params, device: torch.device,
                    seed: int = 0) -> PackedBatch:
    """A training batch as the loader hands it to the step, on ``device``: a :class:`PackedBatch` with uint8
    images ``[B, 3, H, W, 3]`` (uniform), the jitter draws of items 0..B-1 of epoch 0
    (``sample_augmentation``: about half jittered, so the timed step includes the device-side jitter),
    Monodepth2 normalised KITTI K at H x W, uint8 labels ``[B, 3, H, W]`` (:func:`synthetic_labels`),
    boundary ``[B, 1, H, W]`` = B_t of the target labels (boundary.z / .t). ``.unpack()`` gives the float batch."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, len(FRAME_IDS), height, width, 3), generator=g, dtype=torch.uint8)
    K = torch.eye(4)
    K[:3, :3] = torch.as_tensor(KITTI_NORMALISED_K, dtype=torch.float32)
    K[0] *= width
    K[1] *= height
    K = K.expand(batch, 4, 4).contiguous()
    labels = synthetic_labels(batch, height, width, params.model.num_classes, g)
    boundary = boundary_mask_torch(labels[:, FRAME_IDS.index(0)], params.boundary.z, params.boundary.t)[:, None]
    augs = [sample_augmentation(seed, 0, i) for i in range(batch)]
    out = PackedBatch(images=images, jitter=torch.tensor([a.jitter or NO_JITTER for a in augs], dtype=torch.float64),
                      jitter_order=torch.tensor([a.order for a in augs]),
                      jittered=torch.tensor([a.jitter is not None for a in augs]), K=K, inv_K=torch.linalg.inv(K),
                      labels=labels.to(torch.uint8), boundary=boundary)
    return out.to(device, non_blocking=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` averaged over ``steps`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="full", choices=list(VARIANTS), help="Table-3 variant (default full)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--msfan-size", default="w18", choices=["w18", "w18_small", "tiny"],
                    help="w18 = the paper (paper preset's model section); tiny for a CPU smoke test")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward + loss (as train.compile)")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode: default, reduce-overhead, max-autotune, ...")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend (aot_eager checks the tracing without code generation)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--no-tf32", action="store_true",
                    help="CUDA: forbid TF32 in cuDNN convolutions too (default: PyTorch's defaults)")
    ap.add_argument("--inference", action="store_true", help="also time batch-1 depth inference")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.height % 32 or args.width % 32:
        ap.error(f"--height {args.height} / --width {args.width} must be multiples of 32 (5 encoder scales)")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--batch and --steps must be >= 1, --warmup >= 0")
    return args


def compile_options(args) -> dict:
    """torch.compile keyword arguments (``mode`` applies to the inductor backend only)."""
    if args.compile_backend == "inductor":
        return {"mode": args.compile_mode}
    return {"backend": args.compile_backend}


def bench_train_step(args, params: Params, device: torch.device) -> tuple[float, dict[str, torch.Tensor], Networks]:
    """Seconds per training step, the loss terms of the last step and the (trained) networks."""
    variant = get_variant(args.variant)
    torch.manual_seed(args.seed)
    nets = Networks(*build_networks(variant, params.model)).to(device).train()
    optimizer = make_optimizer(nets, params.train.lr, device)
    forward_loss = make_forward_loss(nets, params, variant)
    if args.compile:
        forward_loss = torch.compile(forward_loss, **compile_options(args))
    autocast = autocast_context(args.amp, device)
    batch = synthetic_batch(args.batch, args.height, args.width, params, device, args.seed)
    last: dict[str, dict] = {}

    graphs = args.compile and args.compile_mode in ("reduce-overhead", "max-autotune")  # CUDA graph trees

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last step's outputs may be reused
        last["terms"] = train_step(forward_loss, batch, optimizer, autocast)

    seconds = time_calls(step, args.steps, args.warmup, device)
    return seconds, last["terms"], nets


def bench_inference(args, nets: Networks, device: torch.device) -> float:
    """Seconds per batch-1 ``forward_depth`` call (eval mode, inference mode, same amp / compile options)."""
    depth = nets.depth.eval()
    fn = torch.compile(depth.forward_depth, **compile_options(args)) if args.compile else depth.forward_depth
    image = torch.rand(1, 3, args.height, args.width, device=device)
    autocast = autocast_context(args.amp, device)

    def call():
        with torch.inference_mode(), autocast:
            fn(image)

    return time_calls(call, max(args.steps, 20), max(args.warmup, 3), device)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.no_tf32:  # PyTorch's defaults otherwise: TF32 allowed in cuDNN convolutions, not in matmuls
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats(device)
    params = bench_params(args.msfan_size)
    precision = "bf16-autocast" if (args.amp and device.type == "cuda") else "fp32"
    if device.type == "cuda" and args.no_tf32:
        precision += "-strict"
    mode = (f"compiled({args.compile_backend}, {args.compile_mode})" if args.compile_backend == "inductor"
            else f"compiled({args.compile_backend})") if args.compile else "eager"
    where = device.type + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                           f" ({torch.get_num_threads()} threads)")
    label = f"{args.variant} msfan={args.msfan_size} {args.height}x{args.width}"

    seconds, terms, nets = bench_train_step(args, params, device)
    values = {name: float(v.detach()) if torch.is_tensor(v) else float(v) for name, v in terms.items()}
    total = values["total"]
    rate = args.batch / seconds
    print(f"{label} batch {args.batch} {precision} {mode} {where}: {rate:.{1 if rate >= 10 else 3}f} samples/s, "
          f"{seconds * 1e3:.1f} ms/step, {peak_memory(device)} "
          f"({args.warmup} warm-up + {args.steps} timed steps)", flush=True)
    print("loss terms of the last step: " + ", ".join(f"{n}={v:.6g}" for n, v in values.items()), flush=True)
    if not math.isfinite(total):
        print(f"error: the loss of the last step is {total}: the step is broken", file=sys.stderr)
        return 1
    if args.inference:
        ms = bench_inference(args, nets, device) * 1e3
        print(f"{label} batch 1 depth inference {precision} {mode} {where}: {ms:.2f} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
