"""figures stage: Figure 6 (image, baseline and full depth) and Figure 5 (semantic inconsistency) for the
test frames of eval.figure_frames -> metrics/figures/fig6_qualitative.png, fig5_inconsistency.png; and the
full model's depth of every evaluated frame of the first test drive (a held-out clip of your videos) as a video,
metrics/figures/depth_video.mp4.

The test frames are those the GT export covered (data/eval/gt_depths.npz), the ones the tables measured.
Indices past their end are dropped with a warning (a short or partial test list is not an error). Figure 5
warps the neighbours (t-1, t+1) into t, so it draws the picked frames that have both on disk; when none has,
the figure says so instead. The models are those of the first of ``train.seeds``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from psdif.data import kitti
from psdif.data.dataset import TripletDataset, collate
from psdif.data.images import read_image, resize_image
from psdif.evaluation.evaluate import predict_sigmoids
from psdif.evaluation.figures import inconsistency_figure, inconsistency_rows, note_figure, qualitative_figure
from psdif.evaluation.metrics import load_gt_frames, sigmoid_to_disp
from psdif.evaluation.photometric import write_depth_video
from psdif.paths import GT_DEPTHS, model_path
from psdif.stage import stage_args

OUT = Path("metrics/figures")
FIGURE_ROWS = ("baseline", "full", "msfan")  # the first two that trained: Figure 6's columns


def pick_frames(wanted: list[int], frames: list, what: str) -> list:
    """``frames[i]`` for the indices in ``wanted`` that exist; a warning names the others. None left: the
    first frames (up to as many as wanted)."""
    bad = [i for i in wanted if not 0 <= i < len(frames)]
    if bad:
        print(f"warning: eval.figure_frames {bad} are outside the {len(frames)} {what}; drawing the others",
              file=sys.stderr)
    picked = [frames[i] for i in wanted if 0 <= i < len(frames)]
    return picked or frames[:max(1, len(wanted))]


def has_neighbours(root: Path, ref: kitti.FrameRef, img_ext: str) -> bool:
    return all(kitti.image_path(root, ref.shifted(o), img_ext).is_file() for o in (-1, 1))


def main(argv=None) -> None:
    p, _ = stage_args("figures", argv)
    from psdif.models import load_depth_model, load_pose_model, not_trained

    try:
        lines, _ = load_gt_frames(GT_DEPTHS)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    frames = [kitti.parse_split_line(line, f"{GT_DEPTHS} frame {i}") for i, line in enumerate(lines)]
    picked = pick_frames(list(p.eval.figure_frames), frames, f"test frames of {GT_DEPTHS}")
    images = [read_image(kitti.image_path(p.data.raw_root, f, p.data.img_ext)) for f in picked]

    disparities, nets = {}, {}
    seed = p.train.seeds[0]
    for name in FIGURE_ROWS:  # baseline and full; msfan in place of a row that could not train (no labeller)
        path = Path(model_path(name, seed))
        if len(nets) == 2:
            break
        if why := not_trained(path):
            print(f"warning: {name} not drawn: {why}", file=sys.stderr)
            continue
        net, info = load_depth_model(path)
        nets[name] = (net, info)
        disparities[name] = predict_sigmoids(net, images, info["height"], info["width"], p.eval.batch_size)
    last = list(nets)[-1]  # the full model (or the best row trained)
    qualitative_figure(images, disparities, OUT / "fig6_qualitative.png", p.model.min_depth, p.model.max_depth)

    root = Path(p.data.raw_root)
    triplets = [f for f in picked if has_neighbours(root, f, p.data.img_ext)]
    fig5 = OUT / "fig5_inconsistency.png"
    if not triplets:
        reason = (f"Figure 5 not drawn: none of the picked test frames ({', '.join(f.line() for f in picked)}) "
                  "has both neighbours (t-1, t+1) on disk")
        print(f"warning: {reason}", file=sys.stderr)
        note_figure(reason, fig5)
    else:
        net, info = nets[last]
        pose = load_pose_model(Path(model_path(last, seed)))
        data = TripletDataset(p.data.raw_root, triplets, p.data.height, p.data.width, "data/pseudolabels",
                              "data/boundaries", p.data.img_ext, train=False, seed=0, intrinsics=p.data.intrinsics)
        batch = collate([data[i] for i in range(len(data))]).unpack()
        rows = inconsistency_rows(net, pose, batch, p.model.min_depth, p.model.max_depth)
        inconsistency_figure(rows, fig5)
    video = depth_video(p, frames, *nets[last])
    print(f"wrote {OUT}/fig6_qualitative.png, {fig5}, {video}")


def depth_video(p, frames: list, net, info) -> Path:
    """A model's depth (the full model's) of the evaluated frames of the first test drive, in order, beside the
    frames."""
    drive = [f for f in frames if f.folder == frames[0].folder and f.side == frames[0].side]
    images = [resize_image(read_image(kitti.image_path(p.data.raw_root, f, p.data.img_ext)), info["height"],
                           info["width"]) for f in sorted(drive, key=lambda f: f.frame)]
    sigmoids = predict_sigmoids(net, images, info["height"], info["width"], p.eval.batch_size)
    cfg = info["model_cfg"]
    depths = [1.0 / sigmoid_to_disp(s, cfg["min_depth"], cfg["max_depth"]) for s in sigmoids]
    fps = p.video.fps if p.data.source == "video" and p.video.fps else 10.0  # KITTI's rate
    return write_depth_video(OUT / "depth_video.mp4", images, depths, fps)


if __name__ == "__main__":
    main()
