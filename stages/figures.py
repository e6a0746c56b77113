"""figures stage: Figure 6 (image, baseline and full depth) and Figure 5 (semantic inconsistency) for the
test frames of eval.figure_frames -> metrics/figures/fig6_qualitative.png, fig5_inconsistency.png.
The models are those of the first of ``train.seeds``."""

from __future__ import annotations

from pathlib import Path

import torch

from psdif.data.images import read_image
from psdif.data import kitti
from psdif.paths import model_path
from psdif.stage import stage_args
from psdif.data.dataset import TripletDataset, collate
from psdif.evaluation.evaluate import predict_sigmoids
from psdif.evaluation.figures import inconsistency_figure, inconsistency_rows, qualitative_figure

OUT = Path("metrics/figures")


def main(argv=None) -> None:
    p, _ = stage_args("figures", argv)
    from psdif.models import build_pose_net, dataclass_replace_weights, load_depth_model
    from psdif.config import ModelConfig

    frames = kitti.read_split(Path(p.data.splits_dir) / p.data.test_split / "test_files.txt")
    bad = [i for i in p.eval.figure_frames if not 0 <= i < len(frames)]
    if bad:
        raise SystemExit(f"error: eval.figure_frames {bad} outside the test split's {len(frames)} frames")
    picked = [frames[i] for i in p.eval.figure_frames]
    images = [read_image(kitti.image_path(p.data.raw_root, f, p.data.img_ext)) for f in picked]

    disparities, nets = {}, {}
    seed = p.train.seeds[0]
    for name in ("baseline", "full"):
        net, info = load_depth_model(Path(model_path(name, seed)))
        nets[name] = (net, info)
        disparities[name] = predict_sigmoids(net, images, info["height"], info["width"], p.eval.batch_size)
    qualitative_figure(images, disparities, OUT / "fig6_qualitative.png", p.model.min_depth, p.model.max_depth)

    net, info = nets["full"]
    pose = build_pose_net(dataclass_replace_weights(ModelConfig(**info["model_cfg"])))
    pose.load_state_dict(torch.load(Path(model_path("full", seed)), map_location="cpu", weights_only=True)["pose"])
    data = TripletDataset(p.data.raw_root, picked, p.data.height, p.data.width, "data/pseudolabels",
                          "data/boundaries", p.data.img_ext, train=False, seed=0, intrinsics=p.data.intrinsics)
    batch = collate([data[i] for i in range(len(data))])
    rows = inconsistency_rows(net, pose.eval(), batch, p.model.min_depth, p.model.max_depth)
    inconsistency_figure(rows, OUT / "fig5_inconsistency.png")
    print(f"wrote {OUT}/fig6_qualitative.png, {OUT}/fig5_inconsistency.png")


if __name__ == "__main__":
    main()
