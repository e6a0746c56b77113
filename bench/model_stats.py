"""Parameter counts and FLOPs of the depth and pose nets per Table-3 variant (paper and embedded configs).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no arithmetic is run):
its convention is FLOP = 2 x multiply-accumulates, convolutions / matmuls only (elementwise ops, pooling,
interpolation and normalisation are not counted). "step" = the network part of one training step per
sample: depth net forward + backward, plus the pose net forward + backward twice (pairs t-1/t and t/t+1);
the losses are not counted.

    python bench/model_stats.py                 # print the table (192 x 640)
    python bench/model_stats.py --write         # also update the "## Model size" section of BENCHMARKS.md
    python bench/model_stats.py --time          # CPU forward+backward time, embedded full model, batch 8
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psdif.config import default_params, load_params, preset_path  # noqa: E402
from psdif.models import build_depth_net, build_pose_net  # noqa: E402
from psdif.models.msfan import build_hrnet_backbone  # noqa: E402
from psdif.variants import VARIANTS  # noqa: E402

BENCH_HEADER = "# Benchmarks\n\nMachine for the figures below unless a section says otherwise: 2-core CPU, no GPU.\n"
SECTION = "## Model size"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops(module: torch.nn.Module, x: torch.Tensor, backward: bool) -> float:
    """GFLOP (2 x MAC) of one call on ``x`` (meta device), forward or forward + backward."""
    with FlopCounterMode(display=False) as counter:
        out = module(x)
        if backward:
            tensors = []
            if isinstance(out, tuple):
                tensors = list(out)
            else:
                tensors = list(out.disparities) + list(out.features.values())
                if out.seg_logits is not None:
                    tensors.append(out.seg_logits)
            sum(t.sum() for t in tensors).backward()
    return counter.get_total_flops() / 1e9


def _depth_input(module, h, w):
    return torch.zeros(1, 3, h, w, device="meta")


def model_rows(model_cfg, label: str, h: int, w: int) -> list[dict]:
    """One row per variant: params and GFLOP of the depth net, pose net figures, per-sample step GFLOP."""
    with torch.device("meta"):
        pose = build_pose_net(dataclasses.replace(model_cfg, pose_weights=None)).train()
    pair = torch.zeros(1, 6, h, w, device="meta")
    pose_fwd, pose_step = _flops(pose, pair, False), _flops(pose, pair, True)
    rows = []
    for name, variant in VARIANTS.items():
        if name == "full":  # the same network as msfan_seg_psdifm (the metric loss adds no parameters)
            continue
        cfg = dataclasses.replace(model_cfg, encoder_weights=None, pose_weights=None)
        with torch.device("meta"):
            net = build_depth_net(variant, cfg).train()
        x = _depth_input(net, h, w)
        fwd, step = _flops(net, x, False), _flops(net, x, True)
        rows.append(dict(config=label, variant=name if name != "msfan_seg_psdifm" else "msfan_seg_psdifm / full",
                         depth_m=_params(net) / 1e6, depth_g=fwd, pose_m=_params(pose) / 1e6, pose_g=pose_fwd,
                         step_g=step + 2 * pose_step))
    return rows


def backbone_row(h: int, w: int) -> str:
    with torch.device("meta"):
        hr = build_hrnet_backbone("w18").eval()
    stem = torch.zeros(1, 3, h, w, device="meta")
    with FlopCounterMode(display=False) as counter:
        hr.stages(hr.act2(hr.bn2(hr.conv2(hr.act1(hr.bn1(hr.conv1(stem)))))))
    return (f"timm hrnet_w18 without head (MSFAN backbone): {_params(hr) / 1e6:.2f} M params, "
            f"{counter.get_total_flops() / 1e9:.1f} GFLOP forward at {h}x{w} (design.md §3: 9.56 M, 16.1 GFLOP).")


def format_table(rows: list[dict], h: int, w: int) -> str:
    lines = ["| config | variant | depth net params (M) | depth fwd GFLOP | pose net params (M) | pose fwd GFLOP "
             "| step GFLOP/sample |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['variant']} | {r['depth_m']:.2f} | {r['depth_g']:.1f} | "
                     f"{r['pose_m']:.2f} | {r['pose_g']:.1f} | {r['step_g']:.1f} |")
    return "\n".join(lines)


def _median_time(fn, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        fn()
        if i:  # the first pass warms up
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def time_train_pass(model_cfg, batch: int, h: int, w: int, threads: int, repeats: int = 3) -> tuple[float, float]:
    """Median seconds on the CPU of (full depth net forward + backward with every output summed,
    pose net forward + backward on two pairs), batch ``batch`` at h x w, ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = dataclasses.replace(model_cfg, encoder_weights=None, pose_weights=None)
    net = build_depth_net(VARIANTS["full"], cfg).train()
    pose = build_pose_net(cfg).train()
    x = torch.rand(batch, 3, h, w)
    pairs = torch.rand(2, batch, 6, h, w)

    def depth_pass():
        out = net(x)
        loss = sum(d.mean() for d in out.disparities) + out.seg_logits.mean() + \
            sum(f.mean() for f in out.features.values())
        loss.backward()
        net.zero_grad(set_to_none=True)

    def pose_pass():
        loss = sum(sum(t.sum() for t in pose(p)) for p in pairs)
        loss.backward()
        pose.zero_grad(set_to_none=True)

    return _median_time(depth_pass, repeats), _median_time(pose_pass, repeats)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the "## Model size" section of BENCHMARKS.md, atomically; other sections untouched."""
    text = path.read_text() if path.exists() else BENCH_HEADER
    section = f"{SECTION}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".md.tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--write", action="store_true", help="update the Model size section of BENCHMARKS.md")
    ap.add_argument("--time", action="store_true", help="time the embedded full model fwd+bwd, batch 8, 1 and 2 threads")
    ap.add_argument("--benchmarks", type=Path, default=REPO / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    h, w = args.height, args.width
    paper = load_params(preset_path("paper")).model
    embedded = default_params()
    rows = model_rows(paper, f"paper (msfan_size {paper.msfan_size})", h, w)
    rows += model_rows(embedded.model, f"embedded (msfan_size {embedded.model.msfan_size})", h, w)
    eh, ew = embedded.data.height, embedded.data.width
    native = model_rows(embedded.model, f"embedded @ {eh}x{ew}", eh, ew)
    table = format_table(rows, h, w)
    body = [
        f"FLOPs: `torch.utils.flop_counter.FlopCounterMode`, convention GFLOP = 2 x multiply-accumulates (conv "
        f"and matmul only), one sample at {h}x{w} unless stated. \"step\" = depth net forward + backward plus "
        f"pose net forward + backward twice (the network part of one training step; losses not counted). "
        f"Regenerate with `python bench/model_stats.py --write`.",
        "",
        table,
        "\n".join(format_table(native, eh, ew).split("\n")[2:]),
        "",
        backbone_row(h, w),
        "",
        "Orientation (published figures): Monodepth2 depth net 14.8 M params; DIFFNet 10.9 M; one Monodepth2 "
        "training step about 104 GFLOP per sample at 192x640 (design.md §5; HR-Depth 123, DIFFNet 127).",
        f"Configs: paper = `psdif/presets/paper.yaml` model section (decoder_channels "
        f"{paper.decoder_channels}, baseline/pose width {paper.baseline_width}/{paper.pose_width}); embedded = "
        f"`psdif/presets/embedded.yaml` (decoder_channels {embedded.model.decoder_channels}, baseline/pose width "
        f"{embedded.model.baseline_width}/{embedded.model.pose_width}). The `full` variant is the "
        f"msfan_seg_psdifm network (the metric loss adds no parameters).",
    ]
    if args.time:
        bh, bw, batch = eh, ew, 8
        timings = {t: time_train_pass(embedded.model, batch, bh, bw, t) for t in (1, 2)}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        body += ["", f"CPU time of the embedded networks' training passes (batch {batch}, {bh}x{bw}; median of 3 "
                     f"after warm-up; machine load average {load:.1f} at the time, so rough): "
                     + "; ".join(f"{t} thread{'s' if t > 1 else ''}: `full` depth net fwd+bwd {d:.2f} s, "
                                 f"pose net fwd+bwd x2 {p:.2f} s" for t, (d, p) in timings.items())
                     + ". Losses and warping not included."]
    text = "\n".join(body)
    print(text)
    if args.write:
        write_section(args.benchmarks, text)
        print(f"wrote section '{SECTION}' of {args.benchmarks}")


if __name__ == "__main__":
    main()
