"""psdif.data: triplet loading, intrinsics, augmentation and collate, on a tiny KITTI-layout dataset
written here (and on the real KITTI sample when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psdif.data.batch import FRAME_IDS, Batch, PackedBatch
from psdif.semantics.boundary import boundary_mask, write_boundary_png
from psdif.data.images import resize_image
from psdif.data.dataset import (DataError, TripletDataset, collate, frames_from_split, 
                        sample_augmentation)
from psdif.data.kitti import FrameRef, write_split
from psdif.semantics.labels import label_path, write_label_png

DATE = "2011_09_26"
FOLDER = f"{DATE}/{DATE}_drive_0001_sync"
IMG_H, IMG_W = 96, 256
# distinct left / right intrinsics so a test can tell which one was used
P_RECT = {2: (500.0, 300.0, 510.0, 90.0), 3: (480.0, 128.0, 490.0, 48.0)}


def _calib_text() -> str:
    lines = ["calib_time: 09-Jan-2012 13:57:47"]
    for cam, (fx, cx, fy, cy) in P_RECT.items():
        lines.append(f"S_rect_0{cam}: {IMG_W:e} {IMG_H:e}")
        lines.append(f"P_rect_0{cam}: {fx:e} 0 {cx:e} 0 0 {fy:e} {cy:e} 0 0 0 1 0")
    return "\n".join(lines) + "\n"


def frame_labels(frame: int, h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    """Asymmetric label map: class 1 left of a frame-dependent column, class 2 right, class 7 top rows."""
    labels = np.full((h, w), 2, np.uint8)
    labels[:, : w // 4 + frame] = 1
    labels[: h // 6] = 7
    return labels


def frame_image(frame: int, rng: np.random.Generator, h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    """Textured RGB whose red channel marks class 1 (255) so flips of image and labels can be compared."""
    img = rng.integers(0, 200, size=(h, w, 3), dtype=np.uint8)
    img[..., 0] = np.where(frame_labels(frame, h, w) == 1, 255, 0)
    return img


def write_tiny_kitti(root: Path, frames: range = range(0, 14), sides=("l", "r"), seed: int = 0,
                     same_image: bool = False):
    """KITTI raw layout + pseudo-labels + boundary masks under ``root``; returns (raw, labels, boundary)."""
    raw, labels_root, boundary_root = root / "raw", root / "labels", root / "boundaries"
    (raw / DATE).mkdir(parents=True, exist_ok=True)
    (raw / DATE / "calib_cam_to_cam.txt").write_text(_calib_text())
    rng = np.random.default_rng(seed)
    fixed = frame_image(0, rng)
    for side in sides:
        cam = {"l": 2, "r": 3}[side]
        for f in frames:
            path = raw / FOLDER / f"image_0{cam}" / "data" / f"{f:010d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(fixed if same_image else frame_image(f, rng)).save(path)
            lab = frame_labels(0 if same_image else f)
            write_label_png(label_path(labels_root, FOLDER, side, f), lab)
            write_boundary_png(label_path(boundary_root, FOLDER, side, f), boundary_mask(lab, 5, 10))
    return raw, labels_root, boundary_root


def targets(frames: range, side: str = "l") -> list[FrameRef]:
    return [FrameRef(FOLDER, f, side) for f in frames]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_kitti")
    return write_tiny_kitti(root)


def unpacked(item: PackedBatch) -> Batch:
    """A dataset item as the training step sees it: unpacked (float images, jitter applied), no batch axis."""
    b = collate([item]).unpack()
    return Batch(**{f: getattr(b, f)[0] for f in ("images", "images_aug", "K", "inv_K", "labels", "boundary")})


def make_ds(tiny, frames, train=True, h=48, w=128, **kw):
    raw, labels, boundary = tiny
    kw.setdefault("intrinsics", "calib")
    return TripletDataset(raw, frames, h, w, labels, boundary, "png", train=train, seed=3, **kw)


def test_item_shapes_dtypes_and_collate(tiny):
    ds = make_ds(tiny, targets(range(1, 5)))
    packed = collate([ds[i] for i in range(3)])
    assert isinstance(packed, PackedBatch) and packed.batch_size == 3
    assert packed.images.dtype == torch.uint8 and packed.images.shape == (3, 3, 48, 128, 3)
    assert packed.labels.dtype == torch.uint8 and packed.jitter.shape == (3, 4) and packed.jittered.shape == (3,)
    batch = packed.unpack()
    assert isinstance(batch, Batch) and batch.batch_size == 3
    assert batch.images.shape == batch.images_aug.shape == (3, 3, 3, 48, 128)
    assert batch.images.dtype == torch.float32 and 0 <= batch.images.min() and batch.images.max() <= 1
    assert batch.labels.shape == (3, 3, 48, 128) and batch.labels.dtype == torch.int64
    assert batch.boundary.shape == (3, 1, 48, 128) and batch.boundary.dtype == torch.bool
    assert batch.K.shape == batch.inv_K.shape == (3, 4, 4)
    torch.testing.assert_close(batch.K @ batch.inv_K, torch.eye(4).expand(3, 4, 4), atol=1e-5, rtol=0)
    assert set(batch.labels.unique().tolist()) == {1, 2, 7}
    assert batch.boundary.any() and not batch.boundary.all()


def test_frames_are_t_prev_next_of_same_camera(tiny):
    """Frame order (0, -1, +1): the red mark (class-1 width = W/4 + frame) identifies each frame."""
    ds = make_ds(tiny, targets(range(5, 6)), train=False, h=IMG_H, w=IMG_W)
    item = unpacked(ds[0])
    for k, off in enumerate(FRAME_IDS):
        red_cols = int((item.images[k, 0, 50] > 0.99).sum())
        assert red_cols == IMG_W // 4 + 5 + off
        np.testing.assert_array_equal(item.labels[k].numpy(), frame_labels(5 + off))


def test_intrinsics_scaled_from_calibration(tiny):
    """Row 0 x W_net/W_img, row 1 x H_net/H_img, by hand; right camera uses P_rect_03."""
    for side, cam in (("l", 2), ("r", 3)):
        K = make_ds(tiny, targets(range(2, 3), side), train=False, h=48, w=128)[0].K.numpy()
        fx, cx, fy, cy = P_RECT[cam]
        sx, sy = 128 / 256, 48 / 96
        np.testing.assert_allclose(K, [[fx * sx, 0, cx * sx, 0], [0, fy * sy, cy * sy, 0], [0, 0, 1, 0],
                                       [0, 0, 0, 1]], rtol=1e-6)


def test_intrinsics_kitti_normalised(tiny):
    K = make_ds(tiny, targets(range(2, 3)), train=False, h=64, w=128, intrinsics="kitti_normalised")[0].K
    np.testing.assert_allclose(K.numpy()[:3, :3], [[0.58 * 128, 0, 64], [0, 1.92 * 64, 32], [0, 0, 1]],
                               rtol=1e-6)


def test_flip_moves_image_labels_and_boundary_together(tiny):
    frames = targets(range(1, 13))
    plain = make_ds(tiny, frames, train=False, h=IMG_H, w=IMG_W)
    aug = make_ds(tiny, frames, train=True, h=IMG_H, w=IMG_W)
    flipped = [i for i in range(len(frames)) if sample_augmentation(3, 0, i).flip]
    unflipped = [i for i in range(len(frames)) if not sample_augmentation(3, 0, i).flip]
    assert flipped and unflipped
    for i in flipped[:3]:
        a, p = unpacked(aug[i]), unpacked(plain[i])
        torch.testing.assert_close(a.images, p.images.flip(-1), rtol=0, atol=0)
        assert torch.equal(a.labels, p.labels.flip(-1))
        assert torch.equal(a.boundary, p.boundary.flip(-1))
        # calib K: the principal point of the flipped image, cx' = (W - 1) - cx (see the flip tests below)
        expected_K = p.K.clone()
        expected_K[0, 2] = (IMG_W - 1) - p.K[0, 2]
        torch.testing.assert_close(a.K, expected_K, rtol=0, atol=1e-4)
        # content agrees: the red mark sits on class 1 in the flipped image too, now on the right
        assert torch.equal(a.images[:, 0, 40:] > 0.99, a.labels[:, 40:] == 1)
        assert (a.labels[0, 50, -1] == 1) and (a.labels[0, 50, 0] == 2)
        # B_t of the flipped labels equals the flipped B_t (the Z x Z test is mirror-symmetric)
        np.testing.assert_array_equal(boundary_mask(a.labels[0].numpy(), 5, 10), a.boundary[0].numpy())
    for i in unflipped[:2]:
        assert torch.equal(aug[i].images, plain[i].images) and torch.equal(aug[i].labels, plain[i].labels)
        assert torch.equal(unpacked(aug[i]).images, unpacked(plain[i]).images)


def _flipped_and_plain(tiny, intrinsics, h=48, w=128):
    frames = targets(range(1, 13))
    i = next(i for i in range(len(frames)) if sample_augmentation(3, 0, i).flip)
    return (unpacked(make_ds(tiny, frames, train=True, h=h, w=w, intrinsics=intrinsics)[i]),
            unpacked(make_ds(tiny, frames, train=False, h=h, w=w, intrinsics=intrinsics)[i]))


def test_flipped_calib_intrinsics_project_like_the_flipped_image(tiny):
    """Brute force by projection: a scene point at column u of the unflipped image sits at column
    (W - 1) - u of the flipped one (the array reversed); the flipped item's K must put the mirrored point
    (-X, Y, Z) exactly there, i.e. cx' = (W - 1) - cx with integer pixel centres."""
    w = 128
    a, p = _flipped_and_plain(tiny, "calib", w=w)
    assert torch.equal(a.images, p.images.flip(-1))
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-8, 8, 50), rng.uniform(-2, 2, 50), rng.uniform(3, 60, 50)])  # [3, N]
    K, Kf = p.K.double().numpy()[:3, :3], a.K.double().numpy()[:3, :3]
    u = K[0, 0] * pts[0] / pts[2] + K[0, 2]                       # by hand, the unflipped camera
    v = K[1, 1] * pts[1] / pts[2] + K[1, 2]
    mirrored = pts * np.array([[-1.0], [1.0], [1.0]])
    uvf = Kf @ mirrored
    np.testing.assert_allclose(uvf[0] / uvf[2], (w - 1) - u, atol=1e-4)
    np.testing.assert_allclose(uvf[1] / uvf[2], v, atol=1e-4)
    torch.testing.assert_close(a.K @ a.inv_K, torch.eye(4), atol=1e-5, rtol=0)


def test_flipped_calib_intrinsics_warp_like_the_flipped_image(tiny):
    """Brute force by view synthesis: warping the flipped source with the flipped K and the mirrored
    motion (M T M, M = diag(-1, 1, 1, 1)) gives the flipped warp of the unflipped item."""
    from psdif.geometry import transformation_from_parameters, warp

    a, p = _flipped_and_plain(tiny, "calib", h=48, w=128)
    depth = torch.full((1, 1, 48, 128), 7.0)
    depth[..., 20:40, 30:90] = 4.0                             # a nearer box: parallax varies over the image
    T = transformation_from_parameters(torch.tensor([[[0.0, 0.02, 0.0]]]), torch.tensor([[[0.3, 0.0, 0.5]]]))
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))[None]
    src_plain, src_flip = p.images[1][None], a.images[1][None]
    plain = warp(src_plain, depth, T, p.K[None], p.inv_K[None])
    flipped = warp(src_flip, depth.flip(-1), M @ T @ M, a.K[None], a.inv_K[None])
    inner = (slice(None), slice(None), slice(4, -4), slice(8, -8))  # away from the border padding
    torch.testing.assert_close(flipped.flip(-1)[inner], plain[inner], atol=2e-4, rtol=0)


def test_kitti_normalised_intrinsics_are_kept_by_the_flip(tiny):
    """Monodepth2's cx = 0.5 W is its own mirror image in the half-pixel convention: the same K."""
    a, p = _flipped_and_plain(tiny, "kitti_normalised")
    assert torch.equal(a.images, p.images.flip(-1)) and torch.equal(a.K, p.K)


def test_one_jitter_for_all_frames(tmp_path):
    """Three identical frames stay identical after jitter (one draw per item), and differ from originals."""
    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 8), sides=("l",), same_image=True)
    frames = targets(range(1, 7))
    ds = TripletDataset(raw, frames, 48, 128, labels, boundary, "png", train=True, seed=3, intrinsics="calib")
    jittered = [i for i in range(len(frames)) if sample_augmentation(3, 0, i).jitter is not None]
    clean = [i for i in range(len(frames)) if sample_augmentation(3, 0, i).jitter is None]
    assert jittered and clean
    for i in jittered:
        item = unpacked(ds[i])
        assert torch.equal(item.images_aug[0], item.images_aug[1]) and torch.equal(item.images_aug[0],
                                                                                    item.images_aug[2])
        assert (item.images_aug - item.images).abs().max() > 0.01
        assert 0 <= item.images_aug.min() and item.images_aug.max() <= 1
    for i in clean:
        item = unpacked(ds[i])
        assert torch.equal(item.images_aug, item.images)


def test_the_step_sees_the_resized_frames_and_torchvision_jitter(tiny):
    """An item unpacked on the device = the decoded frames resized (INTER_AREA) / 255, flipped when drawn, and
    torchvision's colour jitter with the item's own draw (the reference of psdif.data.augment.color_jitter)."""
    from psdif.data.augment import color_jitter
    from psdif.data.images import read_image
    from psdif.data.kitti import image_path

    raw, _, _ = tiny
    frames = targets(range(1, 9)) + targets(range(3, 7), "r")
    ds = make_ds(tiny, frames)
    seen = set()
    for i, target in enumerate(frames):
        aug = sample_augmentation(3, 0, i)
        seen.add((aug.flip, aug.jitter is not None))
        images = np.stack([resize_image(read_image(image_path(raw, target.shifted(o), "png")), 48, 128)
                           for o in FRAME_IDS])
        if aug.flip:
            images = images[:, :, ::-1]
        expected = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float() / 255
        got = unpacked(ds[i])
        assert torch.equal(got.images, expected)
        assert (got.images_aug - color_jitter(expected, aug)).abs().max() <= 1e-6
    assert seen == {(False, False), (False, True), (True, False), (True, True)}  # every case was compared


def test_brightness_only_jitter_matches_hand_computation():
    """color_jitter with only brightness: x * b, clamped (torchvision's definition)."""
    from psdif.data.dataset import Augmentation, color_jitter
    x = torch.rand(3, 3, 4, 5)
    out = color_jitter(x, Augmentation(flip=False, jitter=(1.15, 1.0, 1.0, 0.0), order=(0, 1, 2, 3)))
    torch.testing.assert_close(out, (x * 1.15).clamp(0, 1), atol=1e-6, rtol=0)


def test_augmentation_rates_and_determinism():
    draws = [sample_augmentation(0, 0, i) for i in range(400)]
    assert 150 < sum(d.flip for d in draws) < 250
    assert 150 < sum(d.jitter is not None for d in draws) < 250
    for d in draws:
        if d.jitter:
            b, c, s, h = d.jitter
            assert all(0.8 <= f <= 1.2 for f in (b, c, s)) and -0.1 <= h <= 0.1
    assert sample_augmentation(0, 0, 7) == sample_augmentation(0, 0, 7)
    assert [sample_augmentation(0, 1, i) for i in range(20)] != draws[:20]  # the epoch changes the draw


def test_epoch_changes_augmentation_and_is_reproducible(tiny):
    ds = make_ds(tiny, targets(range(1, 9)))
    first = [unpacked(ds[i]).images_aug for i in range(8)]
    ds.set_epoch(1)
    second = [unpacked(ds[i]).images_aug for i in range(8)]
    ds.set_epoch(0)
    assert all(torch.equal(a, unpacked(ds[i]).images_aug) for i, a in enumerate(first))
    assert any(not torch.equal(a, b) for a, b in zip(first, second))
    # an (epoch, index) key gives the item of that epoch whatever epoch was set
    assert all(torch.equal(b, unpacked(ds[(1, i)]).images_aug) for i, b in enumerate(second))


def test_missing_neighbour_frame_is_named(tiny):
    ds = make_ds(tiny, targets(range(0, 1)))  # frame 0 has no frame -1
    with pytest.raises(DataError, match=rf"frame {FOLDER} -1 l .*0000000000\.png|{FOLDER} -1 l"):
        ds[0]
    ds = make_ds(tiny, targets(range(13, 14)))  # frame 14 was not written
    with pytest.raises(DataError, match=r"0000000014\.png"):
        ds[0]


def test_missing_pseudo_label_is_an_error_unless_not_needed(tmp_path):
    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 4), sides=("l",))
    victim = label_path(labels, FOLDER, "l", 3)
    victim.unlink()
    ds = TripletDataset(raw, targets(range(2, 3)), 32, 64, labels, boundary, "png", train=False, seed=0,
                        intrinsics="calib")
    with pytest.raises(FileNotFoundError, match=str(victim)):
        ds[0]
    ds = TripletDataset(raw, targets(range(2, 3)), 32, 64, None, None, "png", train=False, seed=0,
                        intrinsics="calib", need_labels=False, need_boundary=False)
    item = ds[0]
    assert (item.labels == 255).all() and not item.boundary.any()
    with pytest.raises(DataError, match="labels_root"):
        TripletDataset(raw, targets(range(2, 3)), 32, 64, None, None, "png", train=False, seed=0,
                       intrinsics="calib")


def test_resize_image_is_area_average():
    """Shrinking by an integer factor averages each block (anti-aliased), unlike point sampling."""
    img = np.random.default_rng(0).integers(0, 256, size=(32, 64, 3), dtype=np.uint8)
    out = resize_image(img, 8, 16).astype(float)
    ref = img.reshape(8, 4, 16, 4, 3).astype(float).mean((1, 3))
    assert np.abs(out - ref).max() <= 0.5 + 1e-9


def test_labels_resized_nearest(tiny):
    """Labels keep only values that exist (no interpolation between classes)."""
    item = make_ds(tiny, targets(range(3, 4)), train=False, h=40, w=100)[0]
    assert set(item.labels.unique().tolist()) <= {1, 2, 7}


def test_frames_from_split(tmp_path):
    frames = targets(range(1, 4))
    write_split(tmp_path / "mysplit" / "train_files.txt", frames)
    assert frames_from_split(tmp_path, "mysplit", "train") == frames
    with pytest.raises(DataError, match="val_files.txt"):
        frames_from_split(tmp_path, "mysplit", "val")


def test_real_kitti_sample(kitti_mini):
    """Real drive 0001: shapes, value range, K = P_rect_02 scaled to 192 x 640."""
    ds = TripletDataset(kitti_mini, [FrameRef("2011_09_26/2011_09_26_drive_0001_sync", 2, "l")], 192, 640,
                        None, None, "png", train=True, seed=0, intrinsics="calib", need_labels=False,
                        need_boundary=False)
    item = unpacked(ds[0])
    assert item.images.shape == (3, 3, 192, 640)
    assert 0.0 <= item.images.min() < 0.2 and 0.8 < item.images.max() <= 1.0
    K = item.K.numpy()
    np.testing.assert_allclose([K[0, 0], K[0, 2], K[1, 1], K[1, 2]],
                               [721.5377 * 640 / 1242, 609.5593 * 640 / 1242, 721.5377 * 192 / 375,
                                172.854 * 192 / 375], rtol=1e-5)
    # the calibrated K is close to design.md §4.2's normalised convention
    np.testing.assert_allclose(K[0, 0] / 640, 0.58, atol=0.005)
    np.testing.assert_allclose(K[1, 1] / 192, 1.92, atol=0.01)


def test_worker_processes_see_the_epoch(tiny):
    """DataLoader workers (fresh each epoch) use the epoch set before iterating: same items as in-process."""
    from torch.utils.data import DataLoader
    ds = make_ds(tiny, targets(range(1, 7)))
    ds.set_epoch(2)
    loaded = list(DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate))
    direct = collate([ds[i] for i in range(3)])
    assert torch.equal(loaded[0].images, direct.images) and torch.equal(loaded[0].jitter, direct.jitter)
    assert torch.equal(loaded[0].labels, direct.labels)
