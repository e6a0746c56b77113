"""Paper-style figures: Figure 6 (qualitative depth rows) and Figure 5 (semantic-inconsistency maps).

Figure 4 (B_t for several T and Z) is drawn by the boundary stage (:func:`psdif.semantics.boundary.boundary_figure`).
Every figure is written atomically as PNG with matplotlib's Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from psdif.io import atomic_path
from psdif.semantics.cityscapes import CITYSCAPES_PALETTE


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Train ids [H, W] -> RGB uint8 [H, W, 3]; ids outside 0..18 (void) are black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    valid = labels < len(CITYSCAPES_PALETTE)
    out[valid] = CITYSCAPES_PALETTE[labels[valid]]
    return out


def _save(fig, out_png: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(out_png)


def qualitative_figure(images: Sequence[np.ndarray], disparities: dict[str, Sequence[np.ndarray]],
                       out_png: str | Path, min_depth: float = 0.1, max_depth: float = 100.0) -> Path:
    """Figure 6: one row per frame — the image, then each model's disparity (same colour scale per row).

    images: RGB uint8 [H, W, 3]; disparities: model name -> sigmoid maps [h, w] (one per image).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from psdif.evaluation.metrics import sigmoid_to_disp

    names = list(disparities)
    fig, axes = plt.subplots(len(images), 1 + len(names), figsize=(3.6 * (1 + len(names)), 1.4 * len(images)),
                             squeeze=False)
    for r, img in enumerate(images):
        axes[r, 0].imshow(img)
        maps = [sigmoid_to_disp(disparities[n][r], min_depth, max_depth) for n in names]
        vmax = max(float(np.percentile(m, 95)) for m in maps)
        for c, (name, m) in enumerate(zip(names, maps), 1):
            im = axes[r, c].imshow(m, cmap="magma", vmin=float(min(x.min() for x in maps)), vmax=vmax)
            if r == 0:
                axes[r, c].set_title(f"{name} (disparity)")
        fig.colorbar(im, ax=axes[r, -1], fraction=0.03, pad=0.02)
    axes[0, 0].set_title("image")
    for ax in axes.ravel():
        ax.set_axis_off()
    return _save(fig, Path(out_png))


def note_figure(text: str, out_png: str | Path) -> Path:
    """A figure that only says why the real one could not be drawn (the output exists, the reason is visible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    return _save(fig, Path(out_png))


def inconsistency_figure(rows: Sequence[dict], out_png: str | Path) -> Path:
    """Figure 5: per frame the image, S(t), B_t, and B_t split into B_gt (green) and B_ct (red).

    rows: dicts with ``image`` [H, W, 3] uint8, ``labels`` [H, W] train ids, ``boundary`` [H, W] bool,
    ``inconsistent`` [H, W] bool (Algorithm 1's B_c, from warping S(t-1), S(t+1) into t).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 4, figsize=(14, 1.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        b, c = row["boundary"], row["inconsistent"] & row["boundary"]
        split = np.zeros((*b.shape, 3), np.uint8)
        split[b & ~c] = (0, 200, 0)
        split[c] = (230, 0, 0)
        panels = [row["image"], colour_labels(row["labels"]), b, split]
        titles = ["image", "pseudo-labels S(t)", "B_t", f"B_gt (green) / B_ct (red): {int(c.sum())} px"]
        for ax, panel, title in zip(axes[r], panels, titles):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title if r == 0 or ax is axes[r, 3] else "", fontsize=8)
            ax.set_axis_off()
    return _save(fig, Path(out_png))


@torch.no_grad()
def inconsistency_rows(depth_net, pose_net, batch, min_depth: float, max_depth: float) -> list[dict]:
    """Algorithm 1 on a :class:`psdif.data.batch.Batch` with a trained depth and pose net: B_c per item."""
    from psdif.losses import semantic_inconsistency
    from psdif.geometry import disp_to_depth
    from psdif.data.batch import FRAME_IDS
    from psdif.models.pose import FRAME_ORDER, predict_poses

    assert FRAME_IDS == FRAME_ORDER, FRAME_IDS
    depth_net.eval()
    pose_net.eval()
    depth = disp_to_depth(depth_net.forward_depth(batch.images[:, 0]), min_depth, max_depth)[1]
    poses = predict_poses(pose_net, batch.images)
    labels = batch.labels
    inc = semantic_inconsistency([labels[:, 1], labels[:, 2]], labels[:, 0], depth, [poses[-1], poses[1]],
                                 batch.K, batch.inv_K)
    return [{"image": (batch.images[i, 0].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
             "labels": labels[i, 0].numpy().astype(np.int64), "boundary": batch.boundary[i, 0].numpy(),
             "inconsistent": inc[i, 0].numpy()} for i in range(batch.batch_size)]
