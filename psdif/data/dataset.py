"""Training data: (t, t-1, t+1) triplets from a KITTI raw layout, augmentation, and the collate into a batch.

Files (or the prepared arrays) -> :class:`TripletDataset` item (a :class:`psdif.data.batch.PackedBatch` without
the batch dimension) -> :func:`collate` -> :class:`psdif.data.batch.PackedBatch` -> ``unpack()`` on the device
inside the training step -> :class:`psdif.data.batch.Batch`.

- Images are resized to the network size with an anti-aliased filter (``cv2.INTER_AREA`` when shrinking,
  bilinear when enlarging); intrinsics are scaled by the same factors. Frames come either from the PNGs
  (decoded and resized per item) or, after the ``prepare`` stage, from arrays resized once
  (``psdif.data.prepared``): the same pixels, bit for bit.
- Intrinsics (``data.intrinsics``): ``calib`` = the first 3x3 of ``P_rect_02`` (left) / ``P_rect_03``
  (right) of ``<raw_root>/<date>/calib_cam_to_cam.txt``, scaled by (network size / image size);
  ``kitti_normalised`` = Monodepth2's fixed ``[[0.58, 0, 0.5], [0, 1.92, 0.5]]`` x (width, height)
  (design.md §4.2, the convention of the published KITTI results).
- The flip and the principal point. Pixel (u, v) is the centre of column u, row v (integer centres, as the
  warp in ``psdif.geometry`` samples them). Flipping maps column u to u' = (W - 1) - u; a scene point
  (X, Y, Z) seen at u = fx X / Z + cx appears in the flipped image at (W - 1) - u = fx (-X) / Z +
  ((W - 1) - cx): the flipped image is the view of the mirrored scene through a camera with
  cx' = (W - 1) - cx (fx, fy, cy unchanged). ``calib`` K follows this (:func:`flip_intrinsics`).
  ``kitti_normalised`` keeps cx = 0.5 W for both, as Monodepth2 does: 0.5 W is the image centre in the
  half-pixel convention (pixel u spans [u, u + 1], flip u' = W - u, so cx' = W - cx = cx), i.e. half a
  pixel right of the integer-centre image centre (W - 1) / 2, on flipped and unflipped items alike.
- Augmentation (train only, ``psdif.data.augment``): horizontal flip with p = 0.5 of images, pseudo-labels
  and the boundary mask together, here; colour jitter with p = 0.5, ONE draw per item for its three frames,
  carried by the item as factors and applied on the device to ``images_aug`` only (losses use the
  originals). Every draw comes from ``numpy.random.default_rng([seed, epoch, index])``: the same item of
  the same epoch is augmented the same way in any worker, on any rank, before and after a resume. An item
  is fetched by ``index`` (the epoch set by :meth:`TripletDataset.set_epoch`) or by ``(epoch, index)``
  (what the training sampler yields, so persistent loader workers need no epoch update).
- Pseudo-labels (8-bit PNG, Cityscapes train ids, 255 = void) and boundary masks (1-bit PNG, B_t of the
  target frame) live in the KITTI layout ``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png`` and are
  resized nearest. A variant that does not use them gets labels = 255 and an empty boundary mask.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from psdif.data.batch import FRAME_IDS, PackedBatch
from psdif.data.augment import (AUG_P, HUE_RANGE, JITTER_RANGE, NO_AUGMENTATION, NO_JITTER,  # noqa: F401
                                Augmentation, color_jitter, sample_augmentation)
from psdif.semantics.boundary import read_boundary_png
from psdif.data.images import read_image, resize_image, resize_nearest
from psdif.data.kitti import FrameRef, KittiError, calib_entry, image_path, read_calib_file, read_split
from psdif.semantics.cityscapes import VOID_LABEL
from psdif.semantics.labels import label_path, read_label_png

KITTI_NORMALISED_K = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])  # x (W, H): design.md §4.2

Intrinsics = Literal["calib", "kitti_normalised"]


class DataError(RuntimeError):
    """A training input is missing or inconsistent; the message names the file or frame."""


# ------------------------------------------------------------------------------------------ split files

def split_file(splits_dir: str | Path, split: str, part: str) -> Path:
    """``<splits_dir>/<split>/<part>_files.txt`` (Monodepth2 layout), e.g. ``eigen_zhou/train_files.txt``."""
    return Path(splits_dir) / split / f"{part}_files.txt"


def frames_from_split(splits_dir: str | Path, split: str, part: str) -> list[FrameRef]:
    """Target frames of one split list; every listed frame must have both neighbours on disk."""
    path = split_file(splits_dir, split, part)
    if not path.exists():
        raise DataError(f"{path}: split list not found; run the filter stage (dvc repro filter) or check "
                        f"data.splits_dir / data.train_split")
    frames = read_split(path)
    if not frames:
        raise DataError(f"{path}: split list is empty")
    return frames


# ------------------------------------------------------------------------------------------ readers

def camera_intrinsics(raw_root: str | Path, ref: FrameRef, image_hw: tuple[int, int],
                      net_hw: tuple[int, int], mode: Intrinsics) -> np.ndarray:
    """``[4, 4]`` float32 intrinsics at network size (pixels).

    calib: ``P_rect_0{cam}[:, :3]`` of ``<raw_root>/<date>/calib_cam_to_cam.txt`` with row 0 scaled by
    W_net / W_img and row 1 by H_net / H_img (``image_hw`` = size of the image on disk);
    kitti_normalised: design.md §4.2's normalised K with row 0 x W_net and row 1 x H_net.
    """
    (h_img, w_img), (h_net, w_net) = image_hw, net_hw
    K = np.eye(4)
    if mode == "kitti_normalised":
        K[:3, :3] = KITTI_NORMALISED_K
        K[0] *= w_net
        K[1] *= h_net
        return K.astype(np.float32)
    path = Path(raw_root) / ref.date / "calib_cam_to_cam.txt"
    key = f"P_rect_0{ref.cam}"
    try:
        p_rect = calib_entry(_calib(path), key, 12, path)
    except KittiError as exc:
        raise DataError(f"{exc} (or set data.intrinsics: kitti_normalised)") from None
    K[:3, :3] = p_rect.reshape(3, 4)[:, :3]
    K[0] *= w_net / w_img
    K[1] *= h_net / h_img
    return K.astype(np.float32)


def flip_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics of the horizontally flipped image (integer pixel centres): cx' = (width - 1) - cx.

    K: ``[4, 4]`` pixels at the size of the image that is flipped (``width`` columns); fx, fy, cy are kept.
    The flipped image shows the mirrored scene (X -> -X) through this camera (see the module docstring).
    """
    out = np.array(K, copy=True)
    out[0, 2] = (width - 1) - out[0, 2]
    return out


@functools.lru_cache(maxsize=64)
def _calib(path: Path) -> dict:
    """A calibration file, read once per process (it is read for every item otherwise)."""
    return read_calib_file(path)


# ------------------------------------------------------------------------------------------ dataset

def collate(items: Sequence[PackedBatch]) -> PackedBatch:
    """Stack dataset items (each a :class:`PackedBatch` without the batch dimension) into one."""
    return PackedBatch.stack(items)


def pack_item(images: np.ndarray, K: np.ndarray, labels: np.ndarray, boundary: np.ndarray,
              aug: Augmentation) -> PackedBatch:
    """One item: images uint8 [F, H, W, 3], K float32 [4, 4], labels uint8 [F, H, W], boundary bool [1, H, W]
    (all already flipped if ``aug.flip``) and the drawn jitter."""
    return PackedBatch(images=torch.from_numpy(np.ascontiguousarray(images)),
                       jitter=torch.tensor(aug.jitter or NO_JITTER, dtype=torch.float64),
                       jitter_order=torch.tensor(aug.order, dtype=torch.int64),
                       jittered=torch.tensor(aug.jitter is not None),
                       K=torch.from_numpy(K), inv_K=torch.from_numpy(np.linalg.inv(K).astype(np.float32)),
                       labels=torch.from_numpy(np.ascontiguousarray(labels)),
                       boundary=torch.from_numpy(np.ascontiguousarray(boundary)))


class TripletDataset(Dataset):
    """(t, t-1, t+1) triplets of the same drive and camera for each target frame in ``frames``.

    raw_root: KITTI raw layout root; frames: target frames (split list); height, width: network size;
    labels_root / boundary_root: pseudo-label / boundary PNG roots (KITTI layout), required when
    ``need_labels`` / ``need_boundary`` and no ``prepared`` frames are given; train: augment (design.md §4.2);
    seed: augmentation seed; intrinsics: ``data.intrinsics`` (see the module docstring); prepared: a
    :class:`psdif.data.prepared.PreparedFrames` to read the frames from instead of the PNGs (the calibration
    still comes from ``raw_root``). Items are :class:`PackedBatch` objects without the batch axis.
    """

    def __init__(self, raw_root: str | Path, frames: Sequence[FrameRef], height: int, width: int,
                 labels_root: Optional[str | Path], boundary_root: Optional[str | Path], img_ext: str,
                 train: bool, seed: int, *, intrinsics: Intrinsics, need_labels: bool = True,
                 need_boundary: bool = True, prepared=None):
        if prepared is None and need_labels and labels_root is None:
            raise DataError("this variant needs pseudo-labels: pass labels_root (the pseudolabel stage output)")
        if prepared is None and need_boundary and boundary_root is None:
            raise DataError("this variant needs boundary masks: pass boundary_root (the boundary stage output)")
        if prepared is not None:
            prepared.check_size(height, width)
        self.raw_root = Path(raw_root)
        self.frames = list(frames)
        self.height, self.width = height, width
        self.labels_root = Path(labels_root) if labels_root is not None else None
        self.boundary_root = Path(boundary_root) if boundary_root is not None else None
        self.img_ext = img_ext
        self.train, self.seed, self.epoch = train, seed, 0
        self.intrinsics = intrinsics
        self.need_labels, self.need_boundary = need_labels, need_boundary
        self.prepared = prepared

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # the three reads, from the prepared arrays or from the PNGs (decode + resize)

    def _read_images(self, target: FrameRef) -> tuple[np.ndarray, tuple[int, int]]:
        """uint8 [F, H, W, 3] at network size, frames in FRAME_IDS order; (h, w) of the files on disk."""
        if self.prepared is not None:
            return self.prepared.images(target), self.prepared.image_hw(target)
        raw = [self._read_frame(target, o) for o in FRAME_IDS]
        return np.stack([resize_image(im, self.height, self.width) for im in raw]), raw[0].shape[:2]

    def _read_frame(self, target: FrameRef, offset: int) -> np.ndarray:
        ref = target.shifted(offset)
        path = image_path(self.raw_root, ref, self.img_ext)
        if not path.exists():
            raise DataError(f"frame {ref.line()} (offset {offset:+d} of target {target.line()}) not found: "
                            f"{path}; split lists must only hold frames with both neighbours on disk")
        return read_image(path)

    def _read_labels(self, target: FrameRef) -> np.ndarray:
        if not self.need_labels:
            return np.full((len(FRAME_IDS), self.height, self.width), VOID_LABEL, np.uint8)
        if self.prepared is not None:
            return self.prepared.labels(target)
        refs = [target.shifted(o) for o in FRAME_IDS]
        return np.stack([resize_nearest(read_label_png(label_path(self.labels_root, r.folder, r.side, r.frame)),
                                        self.height, self.width) for r in refs])

    def _read_boundary(self, target: FrameRef) -> np.ndarray:
        if not self.need_boundary:
            return np.zeros((1, self.height, self.width), bool)
        if self.prepared is not None:
            return self.prepared.boundary(target)
        path = label_path(self.boundary_root, target.folder, target.side, target.frame)  # same layout
        mask = read_boundary_png(path).astype(np.uint8)
        return resize_nearest(mask, self.height, self.width)[None].astype(bool)

    def __getitem__(self, key: int | tuple[int, int]) -> PackedBatch:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        target = self.frames[index]
        images, image_hw = self._read_images(target)
        K = camera_intrinsics(self.raw_root, target, image_hw, (self.height, self.width), self.intrinsics)
        labels, boundary = self._read_labels(target), self._read_boundary(target)
        aug = sample_augmentation(self.seed, epoch, index) if self.train else NO_AUGMENTATION
        if aug.flip:
            images, labels, boundary = images[:, :, ::-1], labels[:, :, ::-1], boundary[:, :, ::-1]
            if self.intrinsics == "calib":  # kitti_normalised's cx = 0.5 W is its own mirror image
                K = flip_intrinsics(K, self.width)
        return pack_item(images, K, labels, boundary, aug)
