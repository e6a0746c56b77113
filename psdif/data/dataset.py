"""Training data: (t, t-1, t+1) triplets from a KITTI raw layout, augmentation, and the collate into a Batch.

Files -> :class:`TripletDataset` item (a :class:`psdif.batch.Batch` without the batch dimension) -> :func:`collate`
-> :class:`psdif.batch.Batch`.

- Images are resized to the network size with an anti-aliased filter (``cv2.INTER_AREA`` when shrinking,
  bilinear when enlarging); intrinsics are scaled by the same factors.
- Intrinsics (``data.intrinsics``): ``calib`` = the first 3x3 of ``P_rect_02`` (left) / ``P_rect_03``
  (right) of ``<raw_root>/<date>/calib_cam_to_cam.txt``, scaled by (network size / image size);
  ``kitti_normalised`` = Monodepth2's fixed ``[[0.58, 0, 0.5], [0, 1.92, 0.5]]`` x (width, height)
  (the convention of the published KITTI results; docs/paper_setting.md).
- The flip and the principal point. Pixel (u, v) is the centre of column u, row v (integer centres, as the
  warp in ``psdif.geometry`` samples them). Flipping maps column u to u' = (W - 1) - u; a scene point
  (X, Y, Z) seen at u = fx X / Z + cx appears in the flipped image at (W - 1) - u = fx (-X) / Z +
  ((W - 1) - cx): the flipped image is the view of the mirrored scene through a camera with
  cx' = (W - 1) - cx (fx, fy, cy unchanged). ``calib`` K follows this (:func:`flip_intrinsics`).
  ``kitti_normalised`` keeps cx = 0.5 W for both, as Monodepth2 does: 0.5 W is the image centre in the
  half-pixel convention (pixel u spans [u, u + 1], flip u' = W - u, so cx' = W - cx = cx), i.e. half a
  pixel right of the integer-centre image centre (W - 1) / 2, on flipped and unflipped items alike.
- Augmentation (train only, docs/paper_setting.md): colour jitter (brightness, contrast, saturation in [0.8, 1.2],
  hue in [-0.1, 0.1], in a random order) with p = 0.5, ONE jitter per item applied to its three frames
  and written to ``images_aug`` only (losses use the originals); horizontal flip with p = 0.5 of images,
  pseudo-labels and the boundary mask together. Every random draw comes from
  ``numpy.random.default_rng([seed, epoch, index])``: the same item of the same epoch is augmented the
  same way in any worker, on any rank, before and after a resume.
- Pseudo-labels (8-bit PNG, Cityscapes train ids, 255 = void) and boundary masks (1-bit PNG, B_t of the
  target frame) live in the KITTI layout ``<root>/<date>/<drive>/image_0{2,3}/data/%010d.png`` and are
  resized nearest. A variant that does not use them gets labels = 255 and an empty boundary mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from psdif.batch import FRAME_IDS, Batch
from psdif.semantics.boundary import read_boundary_png
from psdif.data.images import read_image, resize_image, resize_nearest
from psdif.data.kitti import FrameRef, image_path, read_calib_file, read_split
from psdif.semantics.cityscapes import VOID_LABEL
from psdif.semantics.labels import label_path, read_label_png

KITTI_NORMALISED_K = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]])  # x (W, H): Monodepth2
JITTER_RANGE = 0.2   # brightness, contrast, saturation factors in [1 - 0.2, 1 + 0.2]   (Monodepth2)
HUE_RANGE = 0.1      # hue shift in [-0.1, 0.1] of a full turn
AUG_P = 0.5          # probability of the jitter and (independently) of the flip

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
    kitti_normalised: Monodepth2's normalised K with row 0 x W_net and row 1 x H_net.
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
    calib = read_calib_file(path)
    if key not in calib or calib[key].size != 12:
        raise DataError(f"{path}: no 12-value {key} entry; fix the calibration file or set "
                        "data.intrinsics: kitti_normalised")
    K[:3, :3] = calib[key].reshape(3, 4)[:, :3]
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


# ------------------------------------------------------------------------------------------ augmentation

@dataclass(frozen=True)
class Augmentation:
    """One item's augmentation: flip, and jitter factors (None = no jitter) applied in ``order``."""

    flip: bool
    jitter: Optional[tuple[float, float, float, float]]  # brightness, contrast, saturation, hue
    order: tuple[int, ...]                                 # permutation of the four jitter operations


NO_AUGMENTATION = Augmentation(flip=False, jitter=None, order=(0, 1, 2, 3))


def sample_augmentation(seed: int, epoch: int, index: int) -> Augmentation:
    """Draw one item's augmentation from ``default_rng([seed, epoch, index])`` (Monodepth2's rates).

    The same number of values is drawn whatever the outcome, so the stream never shifts.
    """
    rng = np.random.default_rng([seed, epoch, index])
    u_flip, u_jitter = rng.random(2)
    b, c, s = rng.uniform(1 - JITTER_RANGE, 1 + JITTER_RANGE, size=3)
    h = rng.uniform(-HUE_RANGE, HUE_RANGE)
    order = tuple(int(i) for i in rng.permutation(4))
    jitter = (float(b), float(c), float(s), float(h)) if u_jitter < AUG_P else None
    return Augmentation(flip=bool(u_flip < AUG_P), jitter=jitter, order=order)


def color_jitter(images: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Apply one jitter to every frame: images [F, 3, H, W] float in [0, 1] -> same shape, in [0, 1]."""
    if aug.jitter is None:
        return images.clone()
    b, c, s, h = aug.jitter
    ops = (lambda x: TF.adjust_brightness(x, b), lambda x: TF.adjust_contrast(x, c),
           lambda x: TF.adjust_saturation(x, s), lambda x: TF.adjust_hue(x, h))
    out = images
    for i in aug.order:
        out = ops[i](out)
    return out.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------ dataset

def collate(items: Sequence[Batch]) -> Batch:
    """Stack dataset items (each a :class:`Batch` without the batch dimension) into one :class:`Batch`."""
    return Batch.stack(items)


class TripletDataset(Dataset):
    """(t, t-1, t+1) triplets of the same drive and camera for each target frame in ``frames``.

    raw_root: KITTI raw layout root; frames: target frames (split list); height, width: network size;
    labels_root / boundary_root: pseudo-label / boundary PNG roots (KITTI layout), required when
    ``need_labels`` / ``need_boundary``; train: augment (module docstring); seed: augmentation seed;
    intrinsics: ``data.intrinsics`` (see the module docstring).
    Call :meth:`set_epoch` before each epoch (the augmentation depends on (seed, epoch, index)).
    """

    def __init__(self, raw_root: str | Path, frames: Sequence[FrameRef], height: int, width: int,
                 labels_root: Optional[str | Path], boundary_root: Optional[str | Path], img_ext: str,
                 train: bool, seed: int, *, intrinsics: Intrinsics, need_labels: bool = True,
                 need_boundary: bool = True):
        if need_labels and labels_root is None:
            raise DataError("this variant needs pseudo-labels: pass labels_root (the pseudolabel stage output)")
        if need_boundary and boundary_root is None:
            raise DataError("this variant needs boundary masks: pass boundary_root (the boundary stage output)")
        self.raw_root = Path(raw_root)
        self.frames = list(frames)
        self.height, self.width = height, width
        self.labels_root = Path(labels_root) if labels_root is not None else None
        self.boundary_root = Path(boundary_root) if boundary_root is not None else None
        self.img_ext = img_ext
        self.train, self.seed, self.epoch = train, seed, 0
        self.intrinsics = intrinsics
        self.need_labels, self.need_boundary = need_labels, need_boundary

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

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
        refs = [target.shifted(o) for o in FRAME_IDS]
        return np.stack([resize_nearest(read_label_png(label_path(self.labels_root, r.folder, r.side, r.frame)),
                                        self.height, self.width) for r in refs])

    def _read_boundary(self, target: FrameRef) -> np.ndarray:
        if not self.need_boundary:
            return np.zeros((1, self.height, self.width), bool)
        path = label_path(self.boundary_root, target.folder, target.side, target.frame)  # same layout
        mask = read_boundary_png(path).astype(np.uint8)
        return resize_nearest(mask, self.height, self.width)[None].astype(bool)

    def __getitem__(self, index: int) -> Batch:
        target = self.frames[index]
        raw = [self._read_frame(target, o) for o in FRAME_IDS]
        K = camera_intrinsics(self.raw_root, target, raw[0].shape[:2], (self.height, self.width),
                              self.intrinsics)
        images = np.stack([resize_image(im, self.height, self.width) for im in raw])  # [F, H, W, 3] uint8
        labels, boundary = self._read_labels(target), self._read_boundary(target)
        aug = sample_augmentation(self.seed, self.epoch, index) if self.train else NO_AUGMENTATION
        if aug.flip:
            images, labels, boundary = images[:, :, ::-1], labels[:, :, ::-1], boundary[:, :, ::-1]
            if self.intrinsics == "calib":  # kitti_normalised's cx = 0.5 W is its own mirror image
                K = flip_intrinsics(K, self.width)
        images_t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        return Batch(images=images_t, images_aug=color_jitter(images_t, aug), K=torch.from_numpy(K),
                       inv_K=torch.from_numpy(np.linalg.inv(K).astype(np.float32)),
                       labels=torch.from_numpy(np.ascontiguousarray(labels)).long(),
                       boundary=torch.from_numpy(np.ascontiguousarray(boundary)))
