"""B_t extraction (design.md §2) against a brute-force reading of the definition, plus storage and figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psdif.semantics.boundary import (_same_label_count_shifts, boundary_figure, boundary_frames, boundary_mask,
                            boundary_mask_torch, read_boundary_png, write_boundary_png)


def brute_force_boundary(labels: np.ndarray, z: int, t: int) -> np.ndarray:
    """The definition, pixel by pixel: out-of-image neighbours are negatives, the centre is included."""
    h, w = labels.shape
    r = z // 2
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            pos = neg = 0
            for yy in range(y - r, y + r + 1):
                for xx in range(x - r, x + r + 1):
                    if 0 <= yy < h and 0 <= xx < w and labels[yy, xx] == labels[y, x]:
                        pos += 1
                    else:
                        neg += 1
            out[y, x] = abs(pos - neg) <= t
    return out


@pytest.mark.parametrize("z,t", [(1, 0), (3, 0), (3, 3), (5, 10), (5, 0), (5, 25), (7, 10), (7, 21)])
@pytest.mark.parametrize("shape,classes", [((9, 11), 2), ((6, 13), 3), ((4, 4), 4)])
def test_matches_brute_force(z, t, shape, classes):
    rng = np.random.default_rng(z * 100 + t + classes)
    labels = rng.integers(0, classes, shape)
    # blocky maps too, so that interior non-boundary pixels exist
    blocky = np.kron(rng.integers(0, classes, (shape[0] // 2 + 1, shape[1] // 3 + 1)), np.ones((2, 3), int))
    for lab in (labels, blocky[: shape[0], : shape[1]]):
        ref = brute_force_boundary(lab, z, t)
        np.testing.assert_array_equal(boundary_mask(lab, z, t), ref)
        np.testing.assert_array_equal(boundary_mask_torch(torch.from_numpy(lab), z, t).numpy(), ref)
        np.testing.assert_array_equal(np.abs(2 * _same_label_count_shifts(lab, z) - z * z) <= t, ref)


def test_many_classes_path_and_uint8_void():
    """More classes than Z^2 takes the shifted-comparison path; label 255 (void) is an ordinary label."""
    rng = np.random.default_rng(0)
    lab = rng.choice(np.r_[np.arange(19), 255], (10, 12)).astype(np.uint8)
    np.testing.assert_array_equal(boundary_mask(lab, 3, 1), brute_force_boundary(lab, 3, 1))


def test_hand_computed_uniform_map():
    """Uniform 10x10 map, Z=5, T=10: border pixels see 15 (edge) or 9 (corner) positives of 25 ->
    |15-10| = 5, |9-16| = 7 <= 10: boundary; (1,1) sees 16 -> 7: boundary; (1,5) sees 20 -> 15: not."""
    mask = boundary_mask(np.zeros((10, 10), int), 5, 10)
    expect = np.zeros((10, 10), bool)
    expect[[0, -1]] = True
    expect[:, [0, -1]] = True
    expect[[1, 1, 8, 8], [1, 8, 1, 8]] = True
    np.testing.assert_array_equal(mask, expect)


def test_torch_batched_matches_numpy():
    rng = np.random.default_rng(3)
    labels = np.kron(rng.integers(0, 5, (3, 6, 9)), np.ones((1, 3, 3), int))
    got = boundary_mask_torch(torch.from_numpy(labels), 5, 10)
    assert got.shape == labels.shape and got.dtype == torch.bool
    for b in range(3):
        np.testing.assert_array_equal(got[b].numpy(), boundary_mask(labels[b], 5, 10))


@pytest.mark.parametrize("z,t", [(4, 10), (0, 1), (5, -1)])
def test_rejects_bad_parameters(z, t):
    with pytest.raises(ValueError, match="Z=|T="):
        boundary_mask(np.zeros((5, 5), int), z, t)


def test_png_roundtrip_and_corrupt(tmp_path):
    mask = np.random.default_rng(1).random((7, 13)) > 0.5
    path = tmp_path / "a" / "0000000001.png"
    write_boundary_png(path, mask)
    from PIL import Image
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(read_boundary_png(path), mask)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(ValueError, match="0000000001.png"):
        read_boundary_png(path)
    assert not list(tmp_path.rglob("*.tmp"))


def test_boundary_frames_resumes(tmp_path):
    labels = {i: np.kron(np.random.default_rng(i).integers(0, 3, (3, 4)), np.ones((4, 4), int))
              for i in range(3)}
    srcs = [tmp_path / f"l{i}" for i in range(3)]
    outs = [tmp_path / "b" / f"{i:010d}.png" for i in range(3)]
    write_boundary_png(outs[1], np.zeros((12, 16), bool))  # pre-existing: must be kept
    info = boundary_frames(srcs, outs, lambda p: labels[int(p.name[1:])], 5, 10, progress=False)
    assert info["computed"] == 2 and info["frames"] == 3
    np.testing.assert_array_equal(read_boundary_png(outs[0]), brute_force_boundary(labels[0], 5, 10))
    assert not read_boundary_png(outs[1]).any()


def _read_npy(path):
    return np.load(path)


def test_boundary_frames_in_processes_equal_one_process(tmp_path):
    """Three processes write the same masks and report the same (bit-equal) fraction as one process."""
    srcs = []
    for i in range(7):
        srcs.append(tmp_path / f"labels{i}.npy")
        np.save(srcs[-1], np.kron(np.random.default_rng(i).integers(0, 4, (5, 6)), np.ones((3, 5), np.int64)))
    one = boundary_frames(srcs, [tmp_path / "one" / f"{i}.png" for i in range(7)], _read_npy, 5, 10, progress=False)
    many = boundary_frames(srcs, [tmp_path / "many" / f"{i}.png" for i in range(7)], _read_npy, 5, 10,
                           progress=False, workers=3)
    assert one == many and many["computed"] == 7
    for i, src in enumerate(srcs):
        np.testing.assert_array_equal(read_boundary_png(tmp_path / "many" / f"{i}.png"),
                                      brute_force_boundary(np.load(src), 5, 10))


def test_figure_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 19, (4, 8)), np.ones((8, 8), int))
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    out = tmp_path / "fig" / "boundary_fig4.png"
    boundary_figure(image, labels, [0, 10], [3, 5], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob("*.tmp"))


def _runs(flags: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D bool array."""
    runs, n = [], 0
    for f in list(flags) + [False]:
        if f:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_figure_draws_full_mask_white_and_empty_mask_black(tmp_path):
    """Uniform labels: Z=5, T=0 gives an empty B_t (|2 |P+| - 25| is odd, never 0) and Z=3, T=10 an all-True
    one (|2 |P+| - 9| <= 9). Panel grid: [image, labels] / [empty, full]. Read back, the empty panel is a
    black block under the image, the full one a white block (not black) under the labels, each as tall as
    the panels above; the titles give the share of B_t pixels."""
    from PIL import Image

    labels = np.zeros((40, 100), int)
    assert not boundary_mask(labels, 5, 0).any() and boundary_mask(labels, 3, 10).all()
    image = np.full((40, 100, 3), 128, np.uint8)
    out = tmp_path / "fig4.png"
    titles = boundary_figure(image, labels, [0], [3], out, z=5, t=10)
    assert titles[2] == "B_t  T=0, Z=5: 0.0% of pixels" and titles[3] == "B_t  Z=3, T=10: 100.0% of pixels"
    px = np.asarray(Image.open(out).convert("RGB")).astype(int)

    def box(colour):  # rows / columns mostly of that colour (title anti-aliasing has stray greys)
        mask = (px == colour).all(-1)
        ys = np.nonzero(mask.sum(1) > 0.5 * mask.sum(1).max())[0]
        xs = np.nonzero(mask.sum(0) > 0.5 * mask.sum(0).max())[0]
        return ys.min(), ys.max(), xs.min(), xs.max()

    iy0, iy1, ix0, ix1 = box((128, 128, 128))   # the image panel
    ly0, ly1, lx0, lx1 = box((128, 64, 128))    # the label panel (Cityscapes road)
    height = iy1 - iy0 + 1
    assert abs((ly1 - ly0 + 1) - height) <= 1 and lx0 > ix1
    below = slice(iy1 + 1, None)
    black_rows = (px[below, ix0 + 2:ix1 - 1] == 0).all(-1).all(-1)
    white_rows = (px[below, lx0 + 2:lx1 - 1] == 255).all(-1).all(-1)
    assert max(_runs(black_rows), default=0) >= height - 2      # the empty mask: black
    # the full mask: white, one block taller than the panel (it joins the white gap above it)
    assert max(_runs(white_rows), default=0) >= height - 2
    assert not (px[below, lx0 + 2:lx1 - 1] == 0).all(-1).all(-1).any()  # no black row under the labels
