"""evaluate stages: Eigen or eigen_benchmark protocol (``data.test_protocol``; design.md §4.3) and Make3D
where data exists -> metrics/eval/<variant>.json.

``--variant NAME`` evaluates models/NAME/seed<k>/model.pt for every seed k of ``train.seeds`` and writes
their mean, spread and per-seed values (``psdif.evaluation.seeds``; one seed: its evaluation as it is);
``--reference`` writes the ``flat`` (constant disparity) and ``untrained`` (full network at its
initialisation with the first seed) rows. The test frames are the ones the GT
export covered (data/eval/gt_depths.npz holds their lines); each result says what it measured: the data
source, the test split, how many of its listed frames were evaluated and a digest of their lines, so rows
of different test sets are never mistaken for one another (psdif.evaluation.tables). Make3D results go
under a ``make3d`` key: the real Test134 from eval.make3d_root when it is on disk, or the generated
cross-domain set (embedded default); otherwise the key says why it did not run (when the download stage could
not reach eval.make3d_urls, its record in raw_test.json says so). On generated data a ``boundary`` group holds
the boundary metrics against the generator's dense depth and labels (depth boundary error, semantic-band and
per-class errors; docs/design.md §4.6); real KITTI (sparse GT) has none. Nothing is downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from psdif.data import kitti
from psdif.evaluation.evaluate import (CONSTANT_SPREAD, ConstantDisparity, disparity_spread, evaluate_boundary_set,
                                      evaluate_eigen, evaluate_make3d_set, load_dense_gt, untrained_net)
from psdif.evaluation.metrics import METRIC_KEYS, load_gt_depths, load_gt_frames, load_gt_protocol
from psdif.evaluation.photometric import evaluate_photometric
from psdif.evaluation.datasets import REAL_MAKE3D, SYNTHETIC_MAKE3D, kitti_label
from psdif.evaluation.seeds import aggregate
from psdif.io import params_hash, progress_enabled, read_json
from psdif.reports import write_report
from psdif.paths import EVAL_DIR, GT_DEPTHS, RAW_TEST, model_path
from psdif.stage import stage_args
from psdif.variants import VARIANTS

GT = Path(GT_DEPTHS)
MAKE3D_SYNTH = Path("data/make3d_synth")


def _args(parser):
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--variant", choices=list(VARIANTS))
    group.add_argument("--reference", action="store_true", help="the flat and untrained rows")


def make3d_source(p) -> tuple[Path | None, str]:
    """(folder, dataset label) of the Make3D evaluation, or (None, why it does not run)."""
    from psdif.data.make3d import has_make3d

    if p.eval.make3d_root:
        if has_make3d(p.eval.make3d_root):
            return Path(p.eval.make3d_root), REAL_MAKE3D
        record = (read_json(RAW_TEST).get("make3d") or {}) if Path(RAW_TEST).is_file() else {}
        if record.get("status") == "unreachable":  # the download stage tried eval.make3d_urls and could not
            return None, f"the download stage could not fetch eval.make3d_urls ({record.get('why')})"
        how = ("set download.fetch: missing to fetch eval.make3d_urls" if p.eval.make3d_urls
               else "list its archives in eval.make3d_urls and set download.fetch: missing")
        return None, (f"no Make3D Test134 images (img-*.jpg) under eval.make3d_root={p.eval.make3d_root}; put "
                      f"Test134 there or {how}")
    if p.data.source == "synthetic" and MAKE3D_SYNTH.is_dir():
        return MAKE3D_SYNTH, SYNTHETIC_MAKE3D
    if p.data.source == "synthetic":
        return None, "no generated Make3D-format set (synthetic.make3d_images is 0)"
    return None, "eval.make3d_root is null"


def test_set(p, frames: list[str], listed: int) -> dict:
    """What a result was measured on (stored beside the metrics)."""
    return {"dataset": kitti_label(p.data.source, p.video.hfov), "test_split": p.data.test_split, "test_listed": listed,
            "test_set": params_hash(frames)[:8], "protocol": p.data.protocol}


def evaluate_one(p, net, name: str, disp_range, frames, gts, make3d, device, measured: dict, dense=None,
                 pose=None) -> dict:
    if measured["protocol"] == "photometric":  # no depth GT (your own videos): the photometric score only
        summary = {**{k: None for k in METRIC_KEYS}, "n_images": 0, **measured}
    else:
        summary, _, sigmoids = evaluate_eigen(net, Path(p.data.raw_root), frames, gts, p.data.height, p.data.width,
                                              p.data.img_ext, p.eval, disp_range, device, progress_enabled(),
                                              measured["protocol"])
        summary.update(measured)
        summary["disp_spread"] = disparity_spread(sigmoids)
    if dense is not None:
        summary["boundary"] = evaluate_boundary_set(sigmoids, dense, p.eval, disp_range)
    if pose is not None:  # your own videos: the masked photometric error of the test frames (design.md §4.9)
        summary["photometric"] = evaluate_photometric(
            net, pose, p.data.raw_root, frames, p.data.img_ext, p.data.height, p.data.width, *disp_range,
            p.data.intrinsics, p.loss.alpha, p.eval.batch_size, device, progress_enabled())
        if measured["protocol"] == "photometric":
            summary["n_images"] = summary["photometric"]["n_images"]
        print(f"{name}: photometric error {summary['photometric']['photo_err']:.4f} (no motion: "
              f"{summary['photometric']['photo_err_identity']:.4f}) on {summary['photometric']['n_images']} frames")
    if summary.get("abs_rel") is None:
        summary["make3d"] = {"not_run": make3d[1] if not make3d[0] else "no depth GT"}
        return summary
    if name != "flat" and summary["disp_spread"] < CONSTANT_SPREAD:
        print(f"warning: {name} predicts one constant depth (disparity spread {summary['disp_spread']:.1e}): its "
              "training collapsed (saturated sigmoid; docs/design.md, 'A collapsed run'); the tables say so")
    samples, label = make3d
    if samples:
        summary["make3d"] = {**evaluate_make3d_set(net, samples, p.data.height, p.data.width, p.eval,
                                                   disp_range, device), "dataset": label}
    else:
        summary["make3d"] = {"not_run": label}
    print(f"{name}: abs_rel {summary['abs_rel']:.4f}  a1 {summary['a1']:.3f} on {summary['n_images']} of "
          f"{measured['test_listed']} {p.data.test_split} frames")
    return summary


def write_row(name: str, summary: dict) -> None:
    out = Path(EVAL_DIR) / f"{name}.json"
    write_report(out, summary)  # numbers; labels beside them in <name>.about.json
    print(f"-> {out}")


def main(argv=None) -> None:
    p, args = stage_args("evaluate", argv, _args)
    from psdif.data.make3d import load_make3d_test
    from psdif.models import NotTrainedError, load_depth_model, load_pose_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        lines, listed = load_gt_frames(GT)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    frames = [kitti.parse_split_line(line, f"{GT} frame {i}") for i, line in enumerate(lines)]
    if (held := load_gt_protocol(GT)) != p.data.protocol:
        raise SystemExit(f"error: {GT} holds the {held} GT but data.test_protocol gives {p.data.protocol}; re-run "
                         "the export_gt stage (`dvc repro export_gt`)")
    gts = load_gt_depths(GT)
    measured = test_set(p, lines, listed)
    try:  # the generated data's exact dense depth and labels: boundary metrics (real KITTI has sparse GT only)
        dense = load_dense_gt(Path(p.data.raw_root), frames) if p.data.source == "synthetic" else None
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    root, label = make3d_source(p)
    if root is None:
        print(f"Make3D: not run ({label})")
    make3d = (load_make3d_test(root) if root else [], label)
    if args.reference:
        disp_range = (p.model.min_depth, p.model.max_depth)
        write_row("flat", evaluate_one(p, ConstantDisparity(), "flat", disp_range, frames, gts, make3d, device,
                                       measured, dense))
        write_row("untrained", evaluate_one(p, untrained_net(p.model, p.train.seeds[0]).to(device), "untrained",
                                            disp_range, frames, gts, make3d, device, measured, dense))
        return
    per_seed = {}
    for seed in p.train.seeds:
        path = Path(model_path(args.variant, seed))
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing (train.seeds = {p.train.seeds}); run `dvc repro` "
                             f"(stage train_{args.variant}@{seed}) first")
        try:
            net, info = load_depth_model(path, device)
        except NotTrainedError as exc:  # a row that could not train (your videos without a labeller)
            print(f"{args.variant}: not run ({exc.why})")
            write_row(args.variant, {"not_run": exc.why, **{k: None for k in METRIC_KEYS}, **measured})
            return
        if (info["height"], info["width"]) != (p.data.height, p.data.width):
            raise SystemExit(f"error: {path} was trained at {info['height']}x{info['width']} "
                             f"but data is {p.data.height}x{p.data.width}; re-run `dvc repro`")
        cfg = info["model_cfg"]
        pose = load_pose_model(path, device) if p.data.source == "video" else None
        per_seed[seed] = evaluate_one(p, net, f"{args.variant} seed {seed}", (cfg["min_depth"], cfg["max_depth"]),
                                      frames, gts, make3d, device, measured, dense, pose)
    try:
        write_row(args.variant, aggregate(per_seed, f"{EVAL_DIR}/{args.variant}.json"))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}")


if __name__ == "__main__":
    main()
