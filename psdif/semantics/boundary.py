"""Semantic boundary regions B_t (paper §3.4, Figure 4; design.md §2) and their storage.

A pixel p belongs to B_t when its Z x Z neighbourhood N(p) (p included) is mixed:
``|count(P+) - count(P-)| <= T``, with P+ = pixels of N(p) with the label of p and P- = the others;
pixels outside the image count as P- (negative). Since |P+| + |P-| = Z^2, the test is
``|2 |P+| - Z^2| <= T``. The paper fixes T = 10; Z = 5 is our default (params ``boundary.z``, ``boundary.t``).

The semantically inconsistent split B_ct / B_gt (Algorithm 1) needs depth and pose and lives with the
metric loss; this module only extracts B_t from a label map.

Storage: one 1-bit PNG (PIL mode ``"1"``) per frame in the KITTI layout of the pseudo-labels
(``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png``), written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from psdif.data.images import open_image, opencv_single_threaded, write_png
from psdif.io import atomic_path, atomic_write_text
from psdif.semantics.cityscapes import CITYSCAPES_PALETTE

__all__ = [
    "boundary_mask", "boundary_mask_torch", "boundary_figure",
    "write_boundary_png", "read_boundary_png", "boundary_frames", "outdated_masks", "record_mask_sources",
]


def _check_zt(z: int, t: int) -> None:
    if z < 1 or z % 2 == 0:
        raise ValueError(f"boundary Z={z} must be a positive odd integer (centred Z x Z neighbourhood)")
    if t < 0:
        raise ValueError(f"boundary T={t} must be >= 0")


def same_label_count(labels: np.ndarray, z: int = 5) -> np.ndarray:
    """|P+| per pixel: pixels of the Z x Z neighbourhood (centre included) that share the centre's label.

    labels: int [H, W] (any integer label values). Returns int32 [H, W] in [1, Z^2].
    Out-of-image neighbours never match. Uses one unnormalised box filter per class present
    (cost independent of Z), or shifted comparisons when Z^2 is below the class count.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    classes = np.unique(labels)
    if z * z < len(classes):
        return _same_label_count_shifts(labels, z)
    count = np.zeros(labels.shape, np.int32)
    for c in classes:
        member = labels == c
        box = cv2.boxFilter(member.astype(np.uint8), cv2.CV_32S, (z, z), normalize=False,
                            borderType=cv2.BORDER_CONSTANT)
        count[member] = box[member]
    return count


def _same_label_count_shifts(labels: np.ndarray, z: int) -> np.ndarray:
    """Same as :func:`same_label_count` by Z^2 shifted comparisons of a padded copy (sentinel = no match)."""
    r = z // 2
    h, w = labels.shape
    lab = labels.astype(np.int64)
    padded = np.pad(lab, r, constant_values=lab.min() - 1)  # the sentinel equals no label
    count = np.zeros((h, w), np.int32)
    for dy in range(z):
        for dx in range(z):
            count += padded[dy:dy + h, dx:dx + w] == lab
    return count


def boundary_mask(labels: np.ndarray, z: int = 5, t: int = 10) -> np.ndarray:
    """B_t of one label map (design.md §2, paper §3.4): ``|count(P+) - count(P-)| <= T`` over a Z x Z window.

    labels: int [H, W] semantic labels (train ids; any integer values). z: odd window side Z.
    t: threshold T. Returns bool [H, W], True on boundary pixels. Out-of-image neighbours are P-.
    """
    _check_zt(z, t)
    pos = same_label_count(labels, z)
    return np.abs(2 * pos - z * z) <= t


def boundary_mask_torch(labels: torch.Tensor, z: int = 5, t: int = 10) -> torch.Tensor:
    """Batched B_t on any device: labels int [B, H, W] (or [H, W]) -> bool of the same shape.

    Z^2 shifted comparisons of a zero-padded copy and an in-image mask; no host sync, fixed shapes.
    """
    _check_zt(z, t)
    squeeze = labels.dim() == 2
    lab = labels[None] if squeeze else labels
    lab = lab.long()
    r = z // 2
    h, w = lab.shape[-2:]
    padded = torch.nn.functional.pad(lab, (r, r, r, r), value=0)
    inside = torch.nn.functional.pad(torch.ones_like(lab, dtype=torch.uint8), (r, r, r, r), value=0).bool()
    count = torch.zeros_like(lab, dtype=torch.int32)
    for dy in range(z):
        for dx in range(z):
            same = (padded[:, dy:dy + h, dx:dx + w] == lab) & inside[:, dy:dy + h, dx:dx + w]
            count += same.int()
    mask = (2 * count - z * z).abs() <= t
    return mask[0] if squeeze else mask


# ----------------------------------------------------------------------------------------------- storage

def write_boundary_png(path: str | Path, mask: np.ndarray) -> None:
    """Store a bool [H, W] mask as a 1-bit PNG (mode ``"1"``), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: boundary mask must be [H, W], got shape {mask.shape}")
    write_png(path, mask, bilevel=True)


def read_boundary_png(path: str | Path) -> np.ndarray:
    """Read a boundary mask written by :func:`write_boundary_png` -> bool [H, W]."""
    # DVC sees a missing or changed file of data/boundaries, and the stage recomputes what differs from its manifest
    with open_image(path, "boundary mask", "the boundary stage computes it again: dvc repro boundary") as im:
        return np.asarray(im.convert("1")).astype(bool)


def _boundary_file(job) -> tuple[int, float]:
    """One frame: read the labels, compute B_t, write it: (1, boundary fraction); a mask already there is
    read back instead: (0, its fraction), the same float as when it was computed."""
    src, dst, read_labels, z, t, skip_existing = job
    if skip_existing and Path(dst).exists():
        return 0, float(read_boundary_png(dst).mean())
    mask = boundary_mask(read_labels(src), z, t)
    write_boundary_png(dst, mask)
    return 1, float(mask.mean())


def boundary_frames(label_paths: Sequence[Path], out_paths: Sequence[Path],
                    read_labels: Callable[[Path], np.ndarray], z: int, t: int,
                    skip_existing: bool = True, progress: bool = True, workers: int = 1) -> dict:
    """Compute and store B_t for many frames; resumable (complete outputs are skipped).

    workers > 1: that many processes share the frames (``read_labels`` must be picklable, e.g. a module
    function); the files and the result are the same. Returns ``{"frames": n, "computed": n_new,
    "boundary_fraction": mean share of B_t pixels over all n frames, kept ones included (0.0 if none)}``:
    the fraction of a rerun equals that of the first run bit for bit, whatever was kept.
    """
    from psdif.process import progress_bar

    if len(label_paths) != len(out_paths):
        raise ValueError(f"{len(label_paths)} label paths but {len(out_paths)} output paths")
    jobs = [(src, dst, read_labels, z, t, skip_existing) for src, dst in zip(label_paths, out_paths)]
    computed, frac = 0, 0.0
    pool = None
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with opencv_single_threaded():
            pool = mp.get_context("fork").Pool(min(workers, len(jobs)))
    try:
        results = pool.imap(_boundary_file, jobs, chunksize=8) if pool else map(_boundary_file, jobs)  # in order:
        # the mean is summed in the same order whatever the number of processes (the manifest is reproducible)
        for done, f in progress_bar(results, total=len(jobs), desc="boundary", disable=not progress):
            computed += done
            frac += f
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return {"frames": len(out_paths), "computed": computed,
            "boundary_fraction": frac / len(jobs) if jobs else 0.0}


MASK_SOURCES = ".labels.json"  # in the mask tree: label file -> MD5 of the label each mask was made from


def outdated_masks(out_root: str | Path, label_files: dict[str, str]) -> list[str]:
    """Masks under ``out_root`` made from a label whose MD5 (``label_files``: the pseudo-label manifest's
    ``files``) has changed since: relabelling a frame can change its label under the same labelling
    configuration (a GPU labels a lone frame in another batch), and then its kept mask is stale."""
    sources = Path(out_root) / MASK_SOURCES
    try:
        made_from = json.loads(sources.read_text()) if sources.is_file() else {}
    except (OSError, ValueError):
        made_from = {}
    if not isinstance(made_from, dict):
        made_from = {}
    return sorted(rel for rel, md5 in label_files.items() if rel in made_from and made_from[rel] != md5)


def record_mask_sources(out_root: str | Path, label_files: dict[str, str]) -> None:
    """After every mask is made: the label MD5 each one was made from (read by :func:`outdated_masks`)."""
    atomic_write_text(Path(out_root) / MASK_SOURCES, json.dumps(label_files, sort_keys=True))


# ----------------------------------------------------------------------------------------------- figure

def boundary_figure(image: np.ndarray, labels: np.ndarray, t_values: Iterable[int],
                    z_values: Iterable[int], out_png: str | Path, z: int = 5, t: int = 10,
                    palette: np.ndarray | None = None) -> list[str]:
    """Figure-4-like panel: image, colour labels, B_t for each T (at Z = ``z``) and each Z (at T = ``t``).

    image: uint8 [H, W, 3]; labels: int [H, W]; palette: uint8 [K, 3] label colours
    (default: Cityscapes). B_t panels use one fixed grey scale, False black and True white (vmin 0, vmax 1:
    an all-True mask is white, never rescaled to black like an empty one), and each title gives the share
    of pixels in B_t. Written with matplotlib (Agg) to a temporary PNG, then renamed. Returns the titles.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if palette is None:
        palette = CITYSCAPES_PALETTE
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(palette)] = palette
    panels = [("image", np.asarray(image)), ("labels", pal[np.asarray(labels).astype(np.uint8)])]
    masks = [(f"T={tv}, Z={z}", boundary_mask(labels, z, tv)) for tv in t_values]
    masks += [(f"Z={zv}, T={t}", boundary_mask(labels, zv, t)) for zv in z_values]
    panels += [(f"B_t  {name}: {100 * float(m.mean()):.1f}% of pixels", m) for name, m in masks]
    h, w = np.asarray(labels).shape
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 6, rows * 6 * h / w + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, img) in zip(axes.ravel(), panels):
        if img.ndim == 2:  # a B_t mask: fixed scale, so the colour of a pixel never depends on the others
            ax.imshow(img.astype(np.uint8), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return [title for title, _ in panels]
