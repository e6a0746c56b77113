"""``psdif predict``: outputs checked against the net's own forward pass, recomputed here by hand."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from psdif import cli
from psdif.config import default_params
from psdif.models import build_depth_net, dataclass_replace_weights
from psdif.predict import PredictError, assign_names
from psdif.variants import get_variant

REPO = Path(__file__).resolve().parents[1]
NET_H, NET_W = 32, 64  # the tiny model's "training size"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(path, net): a tiny ``full``-variant model.pt in train.py's format, and the net it holds."""
    cfg = dataclass_replace_weights(default_params().model)
    variant = get_variant("full")
    torch.manual_seed(0)
    net = build_depth_net(variant, cfg).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save({"depth": net.state_dict(), "pose": {}, "variant": dataclasses.asdict(variant),
                "model_cfg": dataclasses.asdict(cfg), "height": NET_H, "width": NET_W, "step": 1}, path)
    return path, net, cfg


def _random_image(h, w, seed):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def _write_png(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _reference_depth(net, cfg, rgb):
    """By hand: resize to the net size (area when shrinking, else bilinear), forward, resize the sigmoid
    back bilinearly, depth = 1 / (1/max + (1/min − 1/max)·σ)."""
    h, w = rgb.shape[:2]
    shrink = NET_H <= h and NET_W <= w
    small = cv2.resize(rgb, (NET_W, NET_H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sig = net.forward_depth(x)[0, 0].numpy()
    sig = cv2.resize(sig, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return 1.0 / (1.0 / cfg.max_depth + (1.0 / cfg.min_depth - 1.0 / cfg.max_depth) * sig)


def _run(args, capsys=None):
    code = cli.main(["predict", *map(str, args)])
    err = capsys.readouterr().err if capsys else ""
    return code, err


def test_images_of_two_sizes_match_the_hand_reference_and_scale_multiplies(model, tmp_path, capsys):
    path, net, cfg = model
    imgs = {"wide.png": _random_image(40, 130, 1), "small.png": _random_image(20, 30, 2)}  # shrink / enlarge
    for name, rgb in imgs.items():
        _write_png(tmp_path / name, rgb)
    out, out3 = tmp_path / "out", tmp_path / "out3"
    files = [tmp_path / n for n in imgs]
    assert _run([*files, "--model", path, "--out", out, "--batch-size", "2", "--device", "cpu"], capsys)[0] == 0
    assert _run([*files, "--model", path, "--out", out3, "--scale", "3.5", "--device", "cpu"], capsys)[0] == 0
    for name, rgb in imgs.items():
        stem = Path(name).stem
        depth = np.load(out / f"{stem}_depth.npy")
        ref = _reference_depth(net, cfg, rgb)
        assert depth.dtype == np.float32 and depth.shape == rgb.shape[:2]
        assert ref.std() > 1e-4  # a non-flat map, so a wrong resize would show
        np.testing.assert_allclose(depth, ref, rtol=1e-4)
        np.testing.assert_allclose(np.load(out3 / f"{stem}_depth.npy"), 3.5 * depth, rtol=1e-6)
        png = cv2.imread(str(out / f"{stem}_depth.png"))
        assert png.shape == (*rgb.shape[:2], 3)
        # magma: nearest (largest disparity) pixels are the brightest
        grey = png.astype(float).sum(-1)
        assert grey.flat[np.argmin(depth)] > grey.flat[np.argmax(depth)]
    assert not list(out.glob(".*"))  # no temp files left


def test_folder_with_clashing_names_and_batching(model, tmp_path, capsys):
    path, net, cfg = model
    for d, seed in (("a", 3), ("b", 4)):
        (tmp_path / d).mkdir()
        for i in range(3):
            _write_png(tmp_path / d / f"{i:04d}.png", _random_image(36, 70, seed * 10 + i))
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, err = _run([tmp_path / "a", tmp_path / "b", "--model", path, "--out", out, "--batch-size", "2",
                      "--device", "cpu"], capsys)
    assert code == 0
    names = sorted(p.name for p in out.glob("*.npy"))
    assert names == sorted(f"{d}_{i:04d}_depth.npy" for d in "ab" for i in range(3))
    assert "notes.txt" not in err and "ignored 1 other files" in err  # reported, not silent
    rgb = cv2.cvtColor(cv2.imread(str(tmp_path / "b" / "0002.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(np.load(out / "b_0002_depth.npy"), _reference_depth(net, cfg, rgb), rtol=1e-4)


def test_video_gives_one_output_per_frame(model, tmp_path, capsys):
    path, net, cfg = model
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(cv2.cvtColor(_random_image(48, 96, 20 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    cap, frames = cv2.VideoCapture(str(video)), []
    while (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == 5
    out = tmp_path / "out"
    assert _run([video, "--model", path, "--out", out, "--batch-size", "3", "--device", "cpu"], capsys)[0] == 0
    assert sorted(p.name for p in out.glob("*.npy")) == [f"clip_{i:06d}_depth.npy" for i in range(5)]
    assert len(list(out.glob("*.png"))) == 5
    for i in (0, 4):
        np.testing.assert_allclose(np.load(out / f"clip_{i:06d}_depth.npy"),
                                   _reference_depth(net, cfg, frames[i]), rtol=1e-4)


def test_bad_inputs_are_named_good_ones_still_predicted_exit_1(model, tmp_path, capsys):
    path = model[0]
    _write_png(tmp_path / "good.png", _random_image(24, 48, 5))
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "corrupt.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.gif").write_bytes(b"GIF89a")
    (tmp_path / "broken.avi").write_bytes(b"not a video at all")
    bad = [tmp_path / "corrupt.png", tmp_path / "missing.png", tmp_path / "notes.gif", tmp_path / "broken.avi"]
    out = tmp_path / "out"
    code, err = _run([tmp_path / "good.png", *bad, "--model", path, "--out", out, "--device", "cpu"], capsys)
    assert code == 1
    for p in bad:
        assert str(p) in err.split("bad input(s), not predicted:")[1]  # each named in the final list
    assert [p.name for p in out.glob("*.npy")] == ["good_depth.npy"]
    # --strict: the listing-time problems stop the run before anything is written
    code, err = _run([tmp_path / "good.png", tmp_path / "missing.png", "--model", path, "--out",
                      tmp_path / "strict", "--strict", "--device", "cpu"], capsys)
    assert code == 1 and "missing.png" in err and not (tmp_path / "strict").exists()


def test_missing_or_incompatible_model_is_named_exit_2(model, tmp_path, capsys):
    _write_png(tmp_path / "x.png", _random_image(24, 48, 6))
    missing = tmp_path / "nope" / "model.pt"
    code, err = _run([tmp_path / "x.png", "--model", missing, "--out", tmp_path / "o", "--device", "cpu"], capsys)
    assert code == 2 and str(missing) in err
    ckpt = torch.load(model[0], weights_only=True)
    ckpt["depth"] = {k: v for k, v in list(ckpt["depth"].items())[1:]}  # a tensor missing
    other = tmp_path / "other.pt"
    torch.save(ckpt, other)
    code, err = _run([tmp_path / "x.png", "--model", other, "--out", tmp_path / "o", "--device", "cpu"], capsys)
    assert code == 2 and str(other) in err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    code, err = _run([tmp_path / "x.png", "--model", tmp_path / "junk.pt", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "junk.pt" in err and not (tmp_path / "o").exists()


def test_output_names_prefix_parents_or_refuse():
    p = Path
    assert assign_names([p("/d/x/a/0001.png"), p("/d/y/a/0001.png"), p("/d/z/b.png")]) == \
        ["x_a_0001", "y_a_0001", "b"]
    # one folder, one stem: the extension is kept, only for those
    assert assign_names([p("/d/x.png"), p("/d/x.jpg"), p("/d/y.png")]) == ["x_png", "x_jpg", "y"]
    # an image and a video write <name>_depth.* and <name>_NNNNNN_depth.*: the same name is no clash
    assert assign_names([p("/d/good.png"), p("/d/good.mp4")], ["image", "video"]) == ["good", "good"]
    with pytest.raises(PredictError, match="x_png.png.*x.png|x.png.*x_png.png"):
        assign_names([p("/d/x.png"), p("/d/x.jpg"), p("/d/x_png.png")])
    with pytest.raises(PredictError, match="clip_000001.png"):
        assign_names([p("/d/clip.avi"), p("/e/clip_000001.png")], ["video", "image"])


def test_subprocess_entry_point(model, tmp_path):
    _write_png(tmp_path / "img.png", _random_image(30, 50, 7))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "psdif.cli", "predict", str(tmp_path / "img.png"), "--model",
                          str(model[0]), "--out", str(tmp_path / "o"), "--no-png", "--device", "cpu"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "o" / "img_depth.npy").shape == (30, 50)
    assert not (tmp_path / "o" / "img_depth.png").exists()
    res = subprocess.run([sys.executable, "-m", "psdif.cli", "predict", "-h"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "up to an unknown global scale" in " ".join(res.stdout.split())


def test_baseline_checkpoint_with_post_processing(tmp_path, capsys):
    """Any variant: the ResNet-18 baseline; --post-process blends the mirrored pass (Monodepth v1 ramp)."""
    cfg = dataclass_replace_weights(default_params().model)
    variant = get_variant("baseline")
    torch.manual_seed(1)
    net = build_depth_net(variant, cfg).eval()
    path = tmp_path / "baseline.pt"
    torch.save({"depth": net.state_dict(), "variant": dataclasses.asdict(variant),
                "model_cfg": dataclasses.asdict(cfg), "height": 64, "width": 64, "step": 1}, path)
    rgb = _random_image(50, 80, 8)
    _write_png(tmp_path / "im.png", rgb)
    code, _ = _run([tmp_path / "im.png", "--model", path, "--out", tmp_path / "o", "--post-process",
                    "--device", "cpu"], capsys)
    assert code == 0
    small = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_LINEAR)  # 50 < 64: enlarged
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        sig, sig_f = net.forward_depth(torch.cat([x, x.flip(-1)]))[:, 0].numpy()
    back = sig_f[:, ::-1]
    ramp = 1 - np.clip(20 * (np.linspace(0, 1, 64) - 0.05), 0, 1)  # l_mask; r_mask is its mirror
    l_mask, r_mask = ramp[None, :], ramp[::-1][None, :]
    blended = r_mask * sig + l_mask * back + (1 - l_mask - r_mask) * (sig + back) / 2
    full = cv2.resize(blended.astype(np.float32), (80, 50), interpolation=cv2.INTER_LINEAR)
    ref = 1.0 / (1.0 / cfg.max_depth + (1.0 / cfg.min_depth - 1.0 / cfg.max_depth) * full.astype(np.float64))
    np.testing.assert_allclose(np.load(tmp_path / "o" / "im_depth.npy"), ref, rtol=1e-4)


# ------------------------------------------------------------------------------------------ hostile inputs

def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny, valid-CRC PNG whose header claims ``width x height`` (a decompression bomb's header)."""
    import struct
    import zlib

    _write_png(path, _random_image(2, 2, 0))
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def test_decompression_bomb_is_a_bad_input_and_later_images_are_still_predicted(model, tmp_path, capsys):
    path, net, cfg = model
    _png_claiming_size(tmp_path / "a_bomb.png", 15000, 15000)
    rgb = _random_image(24, 48, 9)
    _write_png(tmp_path / "b_good.png", rgb)
    out = tmp_path / "out"
    code, err = _run([tmp_path / "a_bomb.png", tmp_path / "b_good.png", "--model", path, "--out", out,
                      "--device", "cpu"], capsys)
    assert code == 1
    listed = err.split("bad input(s), not predicted:")[1]
    assert "a_bomb.png" in listed and "225000000 pixels" in listed and "too large" in listed
    assert sorted(p.name for p in out.glob("*.npy")) == ["b_good_depth.npy"]
    np.testing.assert_allclose(np.load(out / "b_good_depth.npy"), _reference_depth(net, cfg, rgb), rtol=1e-4)
    # a lower limit of our own refuses smaller images the same way
    code, err = _run([tmp_path / "b_good.png", "--model", path, "--out", tmp_path / "o2", "--device", "cpu",
                      "--max-megapixels", "0.001"], capsys)
    assert code == 1 and "b_good.png: 48 x 24 pixels is more than" in err


def test_image_and_video_of_the_same_name_do_not_clash(model, tmp_path, capsys):
    """good.png -> good_depth.*, good.avi -> good_000000_depth.*: different files, not a name clash."""
    path = model[0]
    _write_png(tmp_path / "good.png", _random_image(24, 48, 10))
    video = tmp_path / "good.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 24))
    for i in range(2):
        writer.write(cv2.cvtColor(_random_image(24, 48, 11 + i), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    code, err = _run([tmp_path / "good.png", video, "--model", path, "--out", out, "--device", "cpu"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.npy")) == ["good_000000_depth.npy", "good_000001_depth.npy",
                                                          "good_depth.npy"]


def test_same_stem_in_one_folder_keeps_the_extension(model, tmp_path, capsys):
    path = model[0]
    _write_png(tmp_path / "x.png", _random_image(24, 48, 12))
    cv2.imwrite(str(tmp_path / "x.jpg"), _random_image(24, 48, 13))
    out = tmp_path / "out"
    code, err = _run([tmp_path / "x.png", tmp_path / "x.jpg", "--model", path, "--out", out, "--device", "cpu"],
                     capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.npy")) == ["x_jpg_depth.npy", "x_png_depth.npy"]
    a, b = np.load(out / "x_png_depth.npy"), np.load(out / "x_jpg_depth.npy")
    assert not np.array_equal(a, b)  # each from its own image


def test_strict_decodes_every_image_before_predicting_anything(model, tmp_path, capsys):
    path = model[0]
    _write_png(tmp_path / "a_good.png", _random_image(24, 48, 14))
    data = (tmp_path / "a_good.png").read_bytes()
    (tmp_path / "b_corrupt.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, err = _run([tmp_path / "a_good.png", tmp_path / "b_corrupt.png", "--model", path, "--out", out,
                      "--strict", "--device", "cpu"], capsys)
    assert code == 1 and "b_corrupt.png" in err and "nothing predicted" in err
    assert not out.exists()  # not even the good image


@pytest.mark.parametrize("where", ["file", "below_a_file"])
def test_out_that_is_a_file_is_a_clear_error(model, tmp_path, capsys, where):
    path = model[0]
    _write_png(tmp_path / "x.png", _random_image(24, 48, 15))
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "sub"
    code, err = _run([tmp_path / "x.png", "--model", path, "--out", out, "--device", "cpu"], capsys)
    assert code == 2 and "--out" in err and str(tmp_path / "taken") in err and "not a folder" in err
    assert (tmp_path / "taken").read_text() == "a file"


def test_full_disk_while_writing_is_reported_not_a_traceback(model, tmp_path, capsys, monkeypatch):
    import errno

    path = model[0]
    _write_png(tmp_path / "x.png", _random_image(24, 48, 16))
    out = tmp_path / "out"

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", no_space)
    code, err = _run([tmp_path / "x.png", "--model", path, "--out", out, "--device", "cpu"], capsys)
    assert code == 2 and str(out / "x_depth.png") in err and "disk is full" in err
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ image modes

# 16-bit samples and the 8-bit values they must give, round(v / 257), worked out by hand:
# 385 / 257 = 1.498 -> 1, 386 / 257 = 1.502 -> 2, 128 / 257 = 0.498 -> 0, 129 / 257 = 0.502 -> 1
SIXTEEN = np.array([0, 128, 129, 257, 385, 386, 32896, 65278, 65535], np.uint16)
EIGHT = np.array([0, 0, 1, 1, 1, 2, 128, 254, 255], np.uint8)


def test_sixteen_bit_and_other_modes_read_as_their_values(tmp_path):
    from PIL import Image

    from psdif.data.images import ImageError, read_image

    grey = np.tile(SIXTEEN, (3, 1))
    Image.fromarray(grey).save(tmp_path / "g16.png")                         # PIL opens it as I;16 (or I)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), np.repeat(np.tile(EIGHT, (3, 1))[..., None], 3, 2))
    ramp = (np.arange(256, dtype=np.uint16) * 257)[None].repeat(2, 0)        # 257 k -> k
    assert cv2.imwrite(str(tmp_path / "ramp16.png"), ramp)                    # OpenCV, 16-bit greyscale
    np.testing.assert_array_equal(read_image(tmp_path / "ramp16.png")[..., 1], np.arange(256)[None].repeat(2, 0))

    rgb16 = np.stack([grey, grey[:, ::-1], np.full_like(grey, 386)], -1)      # 16-bit RGB and RGBA
    assert cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    alpha = np.full(grey.shape + (1,), 7, np.uint16)
    assert cv2.imwrite(str(tmp_path / "c16a.png"), np.concatenate([rgb16[..., ::-1], alpha], -1))
    want = np.stack([np.tile(EIGHT, (3, 1)), np.tile(EIGHT[::-1], (3, 1)), np.full((3, 9), 2, np.uint8)], -1)
    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), want)
    np.testing.assert_array_equal(read_image(tmp_path / "c16a.png"), want)

    eight = np.tile(np.array([0, 1, 100, 255], np.uint8), (2, 1))
    Image.fromarray(eight).save(tmp_path / "l.png")
    Image.fromarray(eight).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(eight).convert("P").save(tmp_path / "p.png")
    Image.fromarray(np.repeat(eight[..., None], 3, 2)).convert("RGBA").save(tmp_path / "rgba.png")
    for name in ("l", "la", "p", "rgba"):
        np.testing.assert_array_equal(read_image(tmp_path / f"{name}.png"), np.repeat(eight[..., None], 3, 2), name)

    Image.fromarray(np.zeros((2, 2), np.float32)).save(tmp_path / "f.tiff")   # mode F: refused by name
    with pytest.raises(ImageError, match=r"f\.tiff: image mode 'F' \(32-bit float\)"):
        read_image(tmp_path / "f.tiff")


def test_predict_on_a_sixteen_bit_greyscale_png_sees_the_image(model, tmp_path, capsys):
    """Before: every pixel of an I;16 PNG read as 255, so the depth map was that of a blank image."""
    from PIL import Image

    path, net, cfg = model
    h, w = 40, 96
    ramp16 = np.round(np.linspace(0, 65535, w))[None].repeat(h, 0).astype(np.uint16)
    ramp16[h // 2:, : w // 3] = 65535 - ramp16[h // 2:, : w // 3]             # some structure besides the ramp
    Image.fromarray(ramp16).save(tmp_path / "grey16.png")
    blank = np.full((h, w, 3), 255, np.uint8)
    _write_png(tmp_path / "blank.png", blank)
    out = tmp_path / "out"
    assert _run([tmp_path / "grey16.png", tmp_path / "blank.png", "--model", path, "--out", out, "--device", "cpu"],
                capsys)[0] == 0
    depth, blank_depth = np.load(out / "grey16_depth.npy"), np.load(out / "blank_depth.npy")
    expected_rgb = np.repeat(((ramp16.astype(np.uint32) + 128) // 257).astype(np.uint8)[..., None], 3, 2)
    assert expected_rgb.std() > 50
    np.testing.assert_allclose(depth, _reference_depth(net, cfg, expected_rgb), rtol=1e-4)
    np.testing.assert_allclose(blank_depth, _reference_depth(net, cfg, blank), rtol=1e-4)
    assert depth.std() > 1e-4 and np.abs(depth - blank_depth).max() > 1e-3


# ------------------------------------------------------------------------------------------ crafted model.pt

class _RunsCode:
    """Unpickling this runs ``os.system`` (what a crafted model.pt would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_model_is_refused_in_our_words_and_never_run(model, tmp_path, capsys):
    marker = tmp_path / "payload_ran"
    crafted = tmp_path / "model.pt"
    ckpt = torch.load(model[0], weights_only=True)
    ckpt["variant"] = _RunsCode(marker)
    torch.save(ckpt, crafted)
    _write_png(tmp_path / "x.png", _random_image(24, 48, 7))
    code, err = _run([tmp_path / "x.png", "--model", crafted, "--out", tmp_path / "o", "--device", "cpu"], capsys)
    assert code == 2 and err.startswith("error: ") and str(crafted) in err, err
    assert "weights_only=False" not in err and "Re-running" not in err and "weights_only" not in err, err
    assert "posix.system" in err or "os.system" in err, err          # names the refused object
    assert not marker.exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ Python API, depth video, export (issue 23)

def _api_reference(net, cfg, rgb01: np.ndarray) -> np.ndarray:
    """By hand with OpenCV: bilinear resize to the net size, forward, bilinear resize of the sigmoid back,
    depth = 1 / (1/max + (1/min − 1/max)·σ)."""
    h, w = rgb01.shape[:2]
    small = cv2.resize(rgb01, (NET_W, NET_H), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        sig = net.forward_depth(torch.from_numpy(small).permute(2, 0, 1)[None])[0, 0].numpy()
    sig = cv2.resize(sig, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return 1.0 / (1.0 / cfg.max_depth + (1.0 / cfg.min_depth - 1.0 / cfg.max_depth) * sig)


@pytest.mark.parametrize("h, w", [(375, 1242), (100, 333)])
def test_python_api_gives_depth_of_any_input_size(model, h, w):
    """The README's three lines: a KITTI-sized (375 x 1242) or odd-sized tensor gives depth of its own size,
    equal to the hand reference (resize to the training size and back); without a size, the net runs at
    H, W rounded up to multiples of 32 and the output is still H x W."""
    from psdif.models import DepthPredictor

    path, net, cfg = model
    predictor = DepthPredictor.from_checkpoint(path)
    rgb = _random_image(h, w, 3).astype(np.float32) / 255
    with torch.no_grad():
        depth = predictor(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    assert depth.shape == (1, 1, h, w)
    np.testing.assert_allclose(depth[0, 0].numpy(), _api_reference(net, cfg, rgb), rtol=1e-3)
    free = DepthPredictor(net, cfg.min_depth, cfg.max_depth).eval()      # no size: multiples of 32
    with torch.no_grad():
        assert free(torch.from_numpy(rgb).permute(2, 0, 1)[None]).shape == (1, 1, h, w)


def test_video_input_also_gets_a_side_by_side_depth_video(model, tmp_path, capsys):
    path, _, _ = model
    video, fps = tmp_path / "drive.mp4", 7.0
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (96, 48))
    assert writer.isOpened()
    frames = [_random_image(48, 96, 40 + i) for i in range(10)]
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert _run([video, "--model", path, "--out", out, "--batch-size", "4", "--device", "cpu"], capsys)[0] == 0
    assert len(list(out.glob("drive_*_depth.npy"))) == 10
    cap = cv2.VideoCapture(str(out / "drive_depth.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    got = []
    while (read := cap.read())[0]:
        got.append(cv2.cvtColor(read[1], cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(got) == 10 and got[0].shape == (48, 2 * 96, 3)
    cap = cv2.VideoCapture(str(video))
    first = cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB)
    cap.release()
    assert np.abs(got[0][:, :96].astype(int) - first).mean() < 12            # left half: the frame (lossy)
    png = cv2.cvtColor(cv2.imread(str(out / "drive_000000_depth.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(got[0][:, 96:].astype(int) - png).mean() < 12              # right half: its depth map
    assert not list(out.glob(".*"))                                          # no partial file left


def _export(args, capsys):
    code = cli.main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def test_export_onnx_and_torchscript_match_torch(model, tmp_path, capsys):
    """`psdif export`: the ONNX file (onnxruntime) and the TorchScript file give the torch predictor's depth,
    at the training size and at an odd size."""
    from psdif.models import DepthPredictor

    ort = pytest.importorskip("onnxruntime")
    path, _, _ = model
    predictor = DepthPredictor.from_checkpoint(path)
    for h, w in ((NET_H, NET_W), (50, 70)):
        images = torch.from_numpy(np.stack([_random_image(h, w, s) for s in (1, 2)])).permute(0, 3, 1, 2) / 255
        with torch.no_grad():
            want = predictor(images).numpy()
        onnx_path, ts_path = tmp_path / f"m{h}.onnx", tmp_path / f"m{h}.pt"
        size = ["--height", h, "--width", w]
        assert _export(["--onnx", path, "--out", onnx_path, *size], capsys)[0] == 0
        got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
            ["depth"], {"image": images.numpy()})[0]
        assert got.shape == (2, 1, h, w)
        np.testing.assert_allclose(got, want, rtol=1e-4)
        assert _export(["--torchscript", path, "--out", ts_path, *size], capsys)[0] == 0
        with torch.no_grad():
            np.testing.assert_allclose(torch.jit.load(str(ts_path))(images).numpy(), want, rtol=1e-5)


def test_export_without_onnx_names_the_extra(model, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    code, err = _export(["--onnx", model[0], "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2 and "pip install psdif[export]" in err and not (tmp_path / "m.onnx").exists()
    code, err = _export(["--torchscript", tmp_path / "nope.pt", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "nope.pt" in err


# ------------------------------------------------------------------------------------------ KITTI benchmark

def test_kitti_benchmark_export_is_the_submission_format(model, tmp_path, capsys):
    """Two generated 1216 x 352 test images -> one uint16 PNG each, same name, same size, decoded / 256 = the
    model's depth x --scale (recomputed by hand, clipped to [1/256, 80] m) within 1/256 m, never 0; and a zip
    of exactly those PNGs."""
    import zipfile

    path, net, cfg = model
    folder = tmp_path / "image"
    folder.mkdir()
    rgbs = {name: _random_image(352, 1216, seed) for seed, name in enumerate(("0000000000", "0000000001"))}
    for name, rgb in rgbs.items():
        _write_png(folder / f"{name}.png", rgb)
    out, scale = tmp_path / "submit", 40.0
    code, err = _run(["--kitti-benchmark", folder, "--model", path, "--out", out, "--scale", scale,
                      "--batch-size", 1], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0000000000.png", "0000000001.png",
                                                     "kitti_benchmark_submission.zip"]
    for name, rgb in rgbs.items():
        png = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == (352, 1216)
        expected = np.clip(_reference_depth(net, cfg, rgb) * scale, 1 / 256, 80.0)
        assert np.abs(png.astype(np.float64) / 256 - expected).max() <= 1 / 256
        assert png.min() >= 1 and png.std() > 0
    with zipfile.ZipFile(out / "kitti_benchmark_submission.zip") as zf:
        assert sorted(zf.namelist()) == ["0000000000.png", "0000000001.png"]
        assert all(zf.read(n) == (out / n).read_bytes() for n in zf.namelist())


def test_benchmark_png_clips_so_a_valid_prediction_is_never_zero():
    from psdif.predict import benchmark_png

    depth = np.array([[0.0, 1e-6, 1 / 256, 1.0, 79.999, 80.0, 500.0, np.inf, np.nan]])
    assert benchmark_png(depth).tolist() == [[1, 1, 1, 256, 20480, 20480, 20480, 20480, 20480]]


def test_kitti_benchmark_needs_a_scale_and_no_other_inputs(model, tmp_path, capsys):
    path = model[0]
    folder = tmp_path / "image"
    folder.mkdir()
    _write_png(folder / "a.png", _random_image(40, 80, 0))
    code, err = _run(["--kitti-benchmark", folder, "--model", path, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--kitti-benchmark needs --scale" in err
    code, err = _run([folder / "a.png", "--kitti-benchmark", folder, "--model", path, "--out", tmp_path / "o",
                      "--scale", 2], capsys)
    assert code == 2 and "drop the inputs" in err
    code, err = _run(["--kitti-benchmark", tmp_path / "nowhere", "--model", path, "--out", tmp_path / "o",
                      "--scale", 2], capsys)
    assert code == 2 and f"{tmp_path / 'nowhere'}: not a folder" in err
    code, err = _run(["--model", path, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "nothing to predict" in err
    assert not (tmp_path / "o").exists()
