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
    # the fraction covers every frame, the kept one read back: the mean of the three stored masks
    stored = [read_boundary_png(o).mean() for o in outs]
    assert info["boundary_fraction"] == pytest.approx(sum(stored) / 3, abs=1e-12)
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


def _boundary_stage_folder(tmp_path):
    """A folder with data/pseudolabels, its manifest and a params.yaml for the boundary stage."""
    import shutil

    import yaml

    from psdif.config import preset_path
    from psdif.io import tree_manifest, write_json
    from tests.test_data import write_tiny_kitti

    raw, labels, _ = write_tiny_kitti(tmp_path / "inputs", frames=range(0, 6))
    folder = tmp_path / "project"
    shutil.copytree(labels, folder / "data" / "pseudolabels")
    write_json(folder / "data/manifests/pseudolabels.json",
               {"config": "labels-v1", "files": tree_manifest(folder / "data/pseudolabels", "**/*.png")})
    params = yaml.safe_load(preset_path("embedded").read_text())
    params["data"].update(raw_root=str(raw), img_ext="png")
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return folder


def _run_boundary_stage(folder, monkeypatch) -> bytes:
    import importlib.util
    from pathlib import Path

    monkeypatch.chdir(folder)
    spec = importlib.util.spec_from_file_location("boundary_stage", Path(__file__).parents[1] / "stages/boundary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--params", str(folder / "params.yaml")])
    return (folder / "data/manifests/boundaries.json").read_bytes()


def test_boundary_stage_rerun_writes_the_same_manifest_and_redoes_a_lost_or_changed_mask(tmp_path, monkeypatch,
                                                                                          capsys):
    """A rerun with every mask present writes the first manifest byte for byte (no NaN fraction, nothing that
    says what this run computed); a deleted mask and one replaced by another frame's are recomputed."""
    import json

    folder = _boundary_stage_folder(tmp_path)
    first = _run_boundary_stage(folder, monkeypatch)
    manifest = json.loads(first)
    masks = {rel: (folder / "data/boundaries" / rel).read_bytes() for rel in manifest["files"]}
    assert len(masks) == 12 and 0 < manifest["boundary_fraction"] < 1
    expected = np.mean([read_boundary_png(folder / "data/boundaries" / rel).mean() for rel in masks])
    assert manifest["boundary_fraction"] == pytest.approx(expected, abs=1e-12)
    capsys.readouterr()
    assert _run_boundary_stage(folder, monkeypatch) == first
    assert "boundary: 12 masks kept, 0 missing and 0 changed since the manifest: nothing to redo" in \
        capsys.readouterr().out

    names = sorted(masks)
    assert masks[names[1]] != masks[names[2]]
    (folder / "data/boundaries" / names[0]).unlink()
    (folder / "data/boundaries" / names[1]).write_bytes(masks[names[2]])
    assert _run_boundary_stage(folder, monkeypatch) == first
    assert "boundary: 10 masks kept, 1 missing and 1 changed since the manifest: recomputing 2" in \
        capsys.readouterr().out
    assert {rel: (folder / "data/boundaries" / rel).read_bytes() for rel in masks} == masks
    assert "NaN" not in first.decode()


def test_boundary_stage_recomputes_the_mask_of_a_label_that_changed_under_the_same_configuration(
        tmp_path, monkeypatch, capsys):
    """A frame relabelled with other content under the same labelling configuration (its manifest entry
    changes, its config does not): its kept mask was made from the old label and is recomputed; the others
    are kept."""
    from psdif.io import md5_file, tree_manifest, write_json
    from psdif.semantics.labels import read_label_png, write_label_png

    folder = _boundary_stage_folder(tmp_path)
    _run_boundary_stage(folder, monkeypatch)
    labels_root, masks_root = folder / "data/pseudolabels", folder / "data/boundaries"
    names = sorted(str(p.relative_to(masks_root)) for p in masks_root.rglob("*.png"))
    stamps = {n: (masks_root / n).stat().st_mtime_ns for n in names}
    relabelled = names[4]
    new_label = np.kron(np.random.default_rng(7).integers(0, 5, (12, 32)), np.ones((8, 8), np.uint8)).astype(np.uint8)
    write_label_png(labels_root / relabelled, new_label)
    write_json(folder / "data/manifests/pseudolabels.json",
               {"config": "labels-v1", "files": tree_manifest(labels_root, "**/*.png")})
    assert md5_file(labels_root / relabelled) != md5_file(labels_root / names[3])
    capsys.readouterr()
    _run_boundary_stage(folder, monkeypatch)
    assert "boundary: 11 masks kept, 0 missing and 0 changed since the manifest, 1 mask made from an input that " \
           "changed since: recomputing 1" in capsys.readouterr().out
    np.testing.assert_array_equal(read_boundary_png(masks_root / relabelled),
                                  brute_force_boundary(read_label_png(labels_root / relabelled), 5, 10))
    assert all((masks_root / n).stat().st_mtime_ns == t for n, t in stamps.items() if n != relabelled)
