"""evaluate stages: Eigen protocol (and Make3D where data exists) -> metrics/eval/<variant>.json.

``--variant NAME`` evaluates models/NAME/seed<k>/model.pt for every seed k of ``train.seeds`` and writes
their mean, spread and per-seed values (``psdif.evaluation.seeds``; one seed: its evaluation as it is);
``--reference`` writes the ``flat`` (constant disparity) and ``untrained`` (full network at its
initialisation with the first seed) rows. Make3D results go under a ``make3d``
key: the real Test134 from eval.make3d_root, or the generated cross-domain set (embedded default).
"""

from __future__ import annotations

from pathlib import Path

import torch

from psdif.data import kitti
from psdif.stage import stage_args
from psdif.io import progress_enabled
from psdif.evaluation.evaluate import ConstantDisparity, evaluate_eigen, evaluate_make3d_set, untrained_net
from psdif.io import write_json
from psdif.evaluation.metrics import load_gt_depths
from psdif.evaluation.seeds import aggregate
from psdif.paths import EVAL_DIR, model_path
from psdif.variants import VARIANTS

GT = Path("data/eval/gt_depths.npz")
MAKE3D_SYNTH = Path("data/make3d_synth")


def _args(parser):
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--variant", choices=list(VARIANTS))
    group.add_argument("--reference", action="store_true", help="the flat and untrained rows")


def make3d_source(p) -> tuple[Path | None, str]:
    from psdif.data.make3d import ensure_make3d

    if p.eval.make3d_root:
        return ensure_make3d(p.eval.make3d_root, p.eval.make3d_urls, p.eval.make3d_sha256,
                             p.download.retries), "Make3D Test134"
    if p.data.source == "synthetic" and MAKE3D_SYNTH.is_dir():
        return MAKE3D_SYNTH, "generated campus scenes (Make3D format, cross-domain)"
    return None, ""


def evaluate_one(p, net, name: str, disp_range, frames, gts, make3d_samples, make3d_label, device) -> dict:
    summary, _, _ = evaluate_eigen(net, Path(p.data.raw_root), frames, gts, p.data.height, p.data.width,
                                   p.data.img_ext, p.eval, disp_range, device, progress_enabled())
    if make3d_samples:
        summary["make3d"] = {**evaluate_make3d_set(net, make3d_samples, p.data.height, p.data.width, p.eval,
                                                   disp_range, device), "dataset": make3d_label}
    print(f"{name}: abs_rel {summary['abs_rel']:.4f}  a1 {summary['a1']:.3f}")
    return summary


def write_row(name: str, summary: dict) -> None:
    out = Path(EVAL_DIR) / f"{name}.json"
    write_json(out, summary)
    print(f"-> {out}")


def main(argv=None) -> None:
    p, args = stage_args("evaluate", argv, _args)
    from psdif.data.make3d import load_make3d_test
    from psdif.models import load_depth_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    frames = kitti.read_split(Path(p.data.splits_dir) / p.data.test_split / "test_files.txt")
    gts = load_gt_depths(GT)
    root, label = make3d_source(p)
    samples = load_make3d_test(root) if root else []
    if args.reference:
        disp_range = (p.model.min_depth, p.model.max_depth)
        write_row("flat", evaluate_one(p, ConstantDisparity(), "flat", disp_range, frames, gts, samples, label,
                                       device))
        write_row("untrained", evaluate_one(p, untrained_net(p.model, p.train.seeds[0]).to(device), "untrained",
                                            disp_range, frames, gts, samples, label, device))
        return
    per_seed = {}
    for seed in p.train.seeds:
        path = Path(model_path(args.variant, seed))
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing (train.seeds = {p.train.seeds}); run `dvc repro` "
                             f"(stage train_{args.variant}@{seed}) first")
        net, info = load_depth_model(path, device)
        if (info["height"], info["width"]) != (p.data.height, p.data.width):
            raise SystemExit(f"error: {path} was trained at {info['height']}x{info['width']} "
                             f"but data is {p.data.height}x{p.data.width}; re-run `dvc repro`")
        cfg = info["model_cfg"]
        per_seed[seed] = evaluate_one(p, net, f"{args.variant} seed {seed}", (cfg["min_depth"], cfg["max_depth"]),
                                      frames, gts, samples, label, device)
    try:
        write_row(args.variant, aggregate(per_seed, f"{EVAL_DIR}/{args.variant}.json"))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")


if __name__ == "__main__":
    main()
