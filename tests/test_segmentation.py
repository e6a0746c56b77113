"""Cityscapes DeepLabv3+ loader (design.md §4.5), in-pipeline teacher, pseudo-label storage."""

from __future__ import annotations

import copy
import pickle
import zipfile
from pathlib import Path
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from psdif.semantics import labels, teacher
from psdif.semantics.deeplab import CheckpointError, CityscapesDeepLabV3Plus, describe_model, load_cityscapes_deeplab
from psdif.semantics.labels import evaluate_miou, label_frames, label_path, normalize_images, predict_labels, read_label_png, write_label_png
from psdif.semantics.teacher import build_teacher, train_teacher

Ref = namedtuple("Ref", "folder frame side")


# ------------------------------------------------------------------------ Cityscapes checkpoint format

@pytest.fixture(scope="module")
def public_ckpt(tmp_path_factory):
    """A checkpoint in the public format: random weights (randomised BN statistics), numpy scalar inside."""
    torch.manual_seed(0)
    model = CityscapesDeepLabV3Plus()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if p.dim() == 1:  # BN affine and the classifier bias
                p.uniform_(-0.5, 1.0)
    path = tmp_path_factory.mktemp("ckpt") / "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    state = model.state_dict()
    torch.save({"cur_itrs": 30000, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
                "scheduler_state": {}, "best_score": np.float64(0.7)}, path, pickle_module=_Numpy1Pickle)
    with zipfile.ZipFile(path) as zf:  # the scalar is pickled under numpy 1's module name, as in the file
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"numpy.core.multiarray\nscalar" in pkl
    return path, state


class _Numpy1Pickler(pickle._Pickler):
    """Pickles numpy scalars as numpy 1.x did (``GLOBAL numpy.core.multiarray scalar``), the form the public
    checkpoint (saved with numpy 1) holds, whatever numpy runs the test."""

    def save_global(self, obj, name=None):
        if obj is type(np.float64(0)).__reduce__(np.float64(0))[0]:  # numpy's scalar reconstructor
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


class _Numpy1Pickle:
    Pickler = _Numpy1Pickler
    Unpickler = pickle.Unpickler
    dump = staticmethod(lambda obj, f, protocol=2: _Numpy1Pickler(f, protocol).dump(obj))


def test_architecture_size_and_output_stride():
    model = CityscapesDeepLabV3Plus()
    info = describe_model(model)
    assert info["state_tensors"] == 674
    assert round(info["params"] / 1e6, 2) == 58.75
    low, out = model.backbone.eval()(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 2048, 4, 6) and low.shape == (1, 256, 16, 24)  # OS 16, low level at 1/4
    l4 = model.backbone.layer4
    assert l4[0].conv2.dilation == (1, 1) and l4[0].conv2.stride == (1, 1)  # first block undilated
    assert all(b.conv2.dilation == (2, 2) for b in l4[1:])
    keys = model.state_dict().keys()
    for key in ("backbone.conv1.weight", "classifier.project.0.weight", "classifier.aspp.convs.3.0.weight",
                "classifier.aspp.convs.4.1.weight", "classifier.aspp.project.0.weight",
                "classifier.classifier.0.weight", "classifier.classifier.3.bias"):
        assert key in keys
    assert not any(k.startswith("backbone.fc") for k in keys)
    assert model.classifier.classifier[0].weight.shape == (256, 304, 3, 3)  # full (not separable) conv
    assert [model.classifier.aspp.convs[i][0].dilation for i in (1, 2, 3)] == [(6, 6), (12, 12), (18, 18)]


def test_aspp_equals_smp_aspp_without_needing_smp():
    """The checkpoint's ASPP is our own module (a GPU box may lack smp): same keys, shapes and output as smp's."""
    smp_decoder = pytest.importorskip("segmentation_models_pytorch.decoders.deeplabv3.decoder")
    from psdif.semantics.deeplab import _ASPP

    torch.manual_seed(0)
    ours = _ASPP(32, 8, (2, 3, 4), dropout=0.1).eval()
    theirs = smp_decoder.ASPP(32, 8, (2, 3, 4), separable=False, dropout=0.1).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in theirs.state_dict().items()]
    with torch.no_grad():
        for p in ours.parameters():
            p.uniform_(-0.5, 0.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 9, 11)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], False, 0.0, 1e-5)


def reference_logits(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """The reference computation written out with functional ops from the state dict (design.md §4.5)."""
    net = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, False, True])
    net.fc = torch.nn.Identity()
    net.load_state_dict({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    net.eval()
    h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    low = net.layer1(h)
    out = net.layer4(net.layer3(net.layer2(low)))
    c = "classifier."
    low = F.relu(_bn(F.conv2d(low, sd[c + "project.0.weight"]), sd, c + "project.1"))
    branches = [F.relu(_bn(F.conv2d(out, sd[c + "aspp.convs.0.0.weight"]), sd, c + "aspp.convs.0.1"))]
    for i, rate in zip((1, 2, 3), (6, 12, 18)):
        y = F.conv2d(out, sd[c + f"aspp.convs.{i}.0.weight"], padding=rate, dilation=rate)
        branches.append(F.relu(_bn(y, sd, c + f"aspp.convs.{i}.1")))
    pooled = F.relu(_bn(F.conv2d(out.mean((2, 3), keepdim=True), sd[c + "aspp.convs.4.1.weight"]), sd,
                        c + "aspp.convs.4.2"))
    branches.append(F.interpolate(pooled, out.shape[-2:], mode="bilinear", align_corners=False))
    aspp = F.relu(_bn(F.conv2d(torch.cat(branches, 1), sd[c + "aspp.project.0.weight"]), sd, c + "aspp.project.1"))
    aspp = F.interpolate(aspp, low.shape[-2:], mode="bilinear", align_corners=False)
    y = F.conv2d(torch.cat([low, aspp], 1), sd[c + "classifier.0.weight"], padding=1)
    y = F.relu(_bn(y, sd, c + "classifier.1"))
    y = F.conv2d(y, sd[c + "classifier.3.weight"], sd[c + "classifier.3.bias"])
    return F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False)


def test_public_checkpoint_loads_and_matches_reference(public_ckpt):
    path, state = public_ckpt
    model = load_cityscapes_deeplab(path)
    assert not model.training
    x = torch.randn(2, 3, 75, 250, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
        ref = reference_logits(state, x[:1])
    assert logits.shape == (2, 19, 75, 250)
    torch.testing.assert_close(logits[:1], ref, rtol=1e-4, atol=1e-4)
    assert logits.std() > 1e-3  # not a degenerate constant output
    # predict_labels on uint8 images = argmax of the logits of the normalised image, full size
    img = np.random.default_rng(0).integers(0, 256, (1, 37, 61, 3), dtype=np.uint8)
    with torch.no_grad():
        expect = model(normalize_images(img)).argmax(1).numpy()
    np.testing.assert_array_equal(predict_labels(model, img, device="cpu"), expect)


@pytest.mark.parametrize("numpy1_names", [True, False])
def test_public_checkpoint_metadata_loads_without_unpickling_code(tmp_path, numpy1_names):
    """The public dict layout with a numpy float64 best_score (pickled by numpy 1 or 2) loads."""
    from psdif.semantics.deeplab import read_checkpoint

    path = tmp_path / "small.pth"
    obj = {"model_state": {"w": torch.ones(2)}, "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01}]},
           "scheduler_state": {"last_epoch": 3}, "cur_itrs": 30000, "best_score": np.float64(0.7215)}
    torch.save(obj, path, **({"pickle_module": _Numpy1Pickle} if numpy1_names else {}))
    ckpt = read_checkpoint(path)
    assert ckpt["cur_itrs"] == 30000 and float(ckpt["best_score"]) == 0.7215
    assert isinstance(ckpt["best_score"], np.floating)
    torch.testing.assert_close(ckpt["model_state"]["w"], torch.ones(2))


class _RunsCode:
    """A pickle payload: unpickling it calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["top", "inside_model_state"])
def test_crafted_checkpoint_does_not_run_code(tmp_path, where):
    marker = tmp_path / "pwned"
    path = tmp_path / "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    payload = {"model_state": {"w": torch.ones(1)}, "cur_itrs": 1, "best_score": np.float64(0.5)}
    if where == "top":
        payload["extra"] = _RunsCode(marker)
    else:
        payload["model_state"]["w"] = _RunsCode(marker)
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as err:
        load_cityscapes_deeplab(path)
    assert not marker.exists(), "unpickling ran the payload"
    msg = str(err.value)
    assert str(path) in msg and "refused" in msg and "open" in msg


def test_loader_errors(public_ckpt, tmp_path):
    path, state = public_ckpt
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_cityscapes_deeplab(tmp_path / "nothing.pth")
    truncated = tmp_path / "truncated.pth"
    with open(path, "rb") as f:
        truncated.write_bytes(f.read(1_000_000))
    with pytest.raises(CheckpointError, match="truncated.pth.*truncated"):
        load_cityscapes_deeplab(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_cityscapes_deeplab(garbage)
    bare = tmp_path / "bare.pth"
    torch.save({"state_dict": {}, "epoch": 3}, bare)
    with pytest.raises(CheckpointError, match="bare.pth.*'model_state'.*epoch"):
        load_cityscapes_deeplab(bare)
    bad = dict(state)
    bad["classifier.project.0.weight"] = torch.zeros(32, 256, 1, 1)
    del bad["backbone.layer4.2.bn3.running_var"]
    bad["classifier.extra.weight"] = torch.zeros(1)
    mismatched = tmp_path / "mismatched.pth"
    torch.save({"model_state": bad}, mismatched)
    with pytest.raises(CheckpointError) as err:
        load_cityscapes_deeplab(mismatched)
    msg = str(err.value)
    for part in ("mismatched.pth", "backbone.layer4.2.bn3.running_var", "classifier.extra.weight",
                 "classifier.project.0.weight", "(32, 256, 1, 1)", "(48, 256, 1, 1)"):
        assert part in msg


# ------------------------------------------------------------------------------------ in-pipeline teacher

def toy_scene(rng: np.random.Generator, h: int = 64, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Sky over building over road, with a car box: distinctive colours plus texture noise."""
    colours = {10: (70, 130, 180), 2: (110, 90, 80), 0: (90, 90, 95), 13: (200, 30, 30)}
    lab = np.full((h, w), 10, np.uint8)
    horizon = rng.integers(h // 4, h // 2)
    lab[horizon:] = 2
    road = rng.integers(h // 2, 3 * h // 4)
    lab[road:] = 0
    y, x = rng.integers(road - 6, h - 10), rng.integers(0, w - 20)
    lab[y:y + 10, x:x + 20] = 13
    img = np.zeros((h, w, 3), np.float32)
    for c, col in colours.items():
        img[lab == c] = col
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def test_teacher_learns_toy_scenes():
    rng = np.random.default_rng(0)
    train = [toy_scene(rng) for _ in range(16)]
    held = [toy_scene(rng) for _ in range(4)]
    model = build_teacher("tu-mobilenetv3_small_050")
    before = evaluate_miou(model, held, progress=False)
    hist = train_teacher(model, train, steps=40, batch_size=4, lr=3e-3, height=48, width=64, seed=0,
                         device="cpu", progress=False)
    loss = hist["loss"]
    assert np.mean(loss[-5:]) < 0.5 * np.mean(loss[:5])
    after = evaluate_miou(model, held, progress=False)
    majority = max(np.mean(np.concatenate([l.ravel() for _, l in held]) == c) for c in (0, 2, 10, 13))
    assert after["pixel_acc"] > majority + 0.1  # beats the constant-class predictor
    assert after["miou"] > before["miou"] and after["classes_present"] == 4
    assert after["per_class"]["train"] is None  # absent from GT: not averaged


def test_class_weights_by_hand():
    counts = np.array([6, 3, 0, 1])  # f = 0.6, 0.3, 0, 0.1
    np.testing.assert_array_equal(teacher.class_weights(counts, "none"), np.ones(4))
    # sqrt_inverse: w_c = f_c^-1/2 / sum_k f_k * f_k^-1/2 = 1 / (sqrt(f_c) * sum_k sqrt(f_k)); absent class 0
    s = np.sqrt(0.6) + np.sqrt(0.3) + np.sqrt(0.1)
    np.testing.assert_allclose(teacher.class_weights(counts, "sqrt_inverse"),
                               [1 / (np.sqrt(0.6) * s), 1 / (np.sqrt(0.3) * s), 0, 1 / (np.sqrt(0.1) * s)])
    # median_frequency: median(0.6, 0.3, 0.1) = 0.3 -> 0.5, 1, 0, 3; sum f w = 0.9 -> divide by 0.9
    np.testing.assert_allclose(teacher.class_weights(counts, "median_frequency"), [5 / 9, 10 / 9, 0, 10 / 3])
    with pytest.raises(ValueError, match="teacher_class_weighting"):
        teacher.class_weights(counts, "inverse")


@pytest.mark.parametrize("weighting", ["none", "sqrt_inverse"])
def test_teacher_loss_is_class_weighted_cross_entropy(weighting):
    """First-step loss of train_teacher == weighted CE computed by hand on the same batch.

    A mirror-symmetric image and label, scale (1, 1) and a full-size crop make every augmented sample
    equal to the input whatever the random flip, so the batch is known exactly.
    """
    rng = np.random.default_rng(0)
    half = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    img = np.concatenate([half, half[:, ::-1]], 1)
    lab = np.zeros((64, 64), np.uint8)
    lab[:, 24:40] = 5  # pole: f = 1/4, road: f = 3/4 (symmetric about the centre)
    torch.manual_seed(0)
    model = build_teacher("tu-mobilenetv3_small_050", 19, 16)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0  # deterministic forward in train mode
    ref = copy.deepcopy(model).train()
    x = normalize_images(np.stack([img, img]))
    y = torch.from_numpy(np.stack([lab, lab])).long()
    with torch.no_grad():
        nll = -torch.log_softmax(ref(x), 1).gather(1, y[:, None])[:, 0]
    # per-pixel weights 1 / sqrt(f_c) (their common scale cancels in the weighted mean)
    w = {"none": {0: 1.0, 5: 1.0}, "sqrt_inverse": {0: 1 / np.sqrt(0.75), 5: 1 / np.sqrt(0.25)}}[weighting]
    wpx = torch.where(y == 5, w[5], w[0]).double()
    expect = float((wpx * nll.double()).sum() / wpx.sum())
    hist = train_teacher(model, [(img, lab)] * 2, steps=1, batch_size=2, lr=1e-3, height=64, width=64,
                         seed=0, scale=(1.0, 1.0), device="cpu", progress=False, class_weighting=weighting)
    assert hist["loss"][0] == pytest.approx(expect, rel=1e-4)
    if weighting == "sqrt_inverse":  # 1 / (sqrt(f_c) (sqrt(3/4) + sqrt(1/4)))
        total = np.sqrt(0.75) + 0.5
        assert hist["class_weights"][0] == pytest.approx(1 / (np.sqrt(0.75) * total))
        assert hist["class_weights"][5] == pytest.approx(1 / (0.5 * total))
        assert hist["class_weights"][1] == 0.0


def test_predict_labels_full_size_is_argmax():
    torch.manual_seed(0)
    model = build_teacher("tu-mobilenetv3_small_050").eval()
    img = np.random.default_rng(0).integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        expect = model(normalize_images(img)).argmax(1).numpy()
    got = predict_labels(model, img, batch_size=2, device="cpu")
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expect)
    odd = predict_labels(model, img[:, :61, :87], batch_size=2, device="cpu")  # padded to 64x96, cropped
    assert odd.shape == (3, 61, 87)


def test_miou_by_hand():
    conf = labels.confusion_matrix(np.array([0, 0, 1, 1, 255]), np.array([0, 1, 1, 1, 0]), 3)
    res = labels.miou_from_confusion(conf, ("a", "b", "c"))
    # class a: tp 1, fn 1, fp 0 -> 1/2; class b: tp 2, fp 1 -> 2/3; class c absent
    assert res["per_class"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": None}
    assert res["miou"] == pytest.approx((0.5 + 2 / 3) / 2)


# ------------------------------------------------------------------------------------------------ storage

def test_label_path_layout(tmp_path):
    assert label_path(tmp_path, "2011_09_26/2011_09_26_drive_0001_sync", "r", 7) == \
        tmp_path / "2011_09_26/2011_09_26_drive_0001_sync/image_03/data/0000000007.png"
    assert label_path(tmp_path, "d/x", "l", 12).parts[-3:] == ("image_02", "data", "0000000012.png")


def test_label_png_roundtrip_and_corrupt(tmp_path):
    lab = np.random.default_rng(0).integers(0, 19, (5, 9)).astype(np.uint8)
    path = tmp_path / "x" / "0000000000.png"
    write_label_png(path, lab)
    np.testing.assert_array_equal(read_label_png(path), lab)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="0000000000.png.*truncated"):
        read_label_png(path)


def _frames():
    return [Ref("2011_09_26/d1", i, s) for i in range(5) for s in "lr"] + [Ref("2011_09_28/d2", 0, "l")]


def _image(ref) -> np.ndarray:
    h, w = (8, 12) if ref.folder.endswith("d1") else (6, 10)  # two sizes: batches must split
    rng = np.random.default_rng(ref.frame * 2 + (ref.side == "r"))
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _model_fn(calls):
    def fn(images):
        calls.append(len(images))
        return (images[..., 0] % 19).astype(np.uint8)
    return fn


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-decoders-2-writers"])
def test_label_frames_writes_skips_and_shards(tmp_path, workers):
    """Same files and histogram whether decoding and encoding run here or in worker processes / threads."""
    frames = _frames()
    calls: list[int] = []
    # pre-existing output: complete file, must be kept and counted
    keep = np.full((8, 12), 3, np.uint8)
    write_label_png(label_path(tmp_path, "2011_09_26/d1", "l", 0), keep)
    hist = label_frames(_model_fn(calls), frames, _image, tmp_path, batch_size=4, progress=False, workers=workers)
    assert sum(calls) == len(frames) - 1 and max(calls) <= 4
    expect_hist = np.zeros(19, np.int64)
    for ref in frames:
        got = read_label_png(label_path(tmp_path, ref.folder, ref.side, ref.frame))
        want = keep if (ref.folder, ref.frame, ref.side) == ("2011_09_26/d1", 0, "l") else _image(ref)[..., 0] % 19
        np.testing.assert_array_equal(got, want)
        expect_hist += np.bincount(want.ravel(), minlength=19)
    np.testing.assert_array_equal(hist, expect_hist)
    assert not list(tmp_path.rglob("*.tmp"))
    # second run: everything exists, the model is not called
    calls.clear()
    label_frames(_model_fn(calls), frames, _image, tmp_path, batch_size=4, progress=False)
    assert calls == []
    # shards are disjoint and cover all frames
    out2 = tmp_path / "sharded"
    h0 = label_frames(_model_fn([]), frames, _image, out2, 3, rank=0, world_size=2, progress=False, workers=workers)
    n0 = len(list(out2.rglob("*.png")))
    h1 = label_frames(_model_fn([]), frames, _image, out2, 3, rank=1, world_size=2, progress=False, workers=workers)
    assert n0 == 6 and len(list(out2.rglob("*.png"))) == len(frames)
    assert (h0 + h1).sum() == sum(_image(r)[..., 0].size for r in frames)


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_run_leaves_no_partial_png(tmp_path, monkeypatch, workers):
    frames = _frames()
    calls: list[int] = []

    def dies_on_second_batch(images):
        if calls:
            raise KeyboardInterrupt("killed")
        return _model_fn(calls)(images)

    with pytest.raises(KeyboardInterrupt):
        label_frames(dies_on_second_batch, frames, _image, tmp_path, batch_size=4, progress=False, workers=workers)
    written = sorted(tmp_path.rglob("*.png"))
    assert len(written) == 4 and not list(tmp_path.rglob("*.tmp"))  # the first batch's writes completed
    for p in written:
        read_label_png(p)  # complete

    # a crash while the PNG bytes go to disk (a full disk), after some bytes hit the disk
    real_write = Path.write_bytes

    def broken_write(self, data):
        real_write(self, data[:10])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", broken_write)
    target = tmp_path / "crash" / "0000000000.png"
    with pytest.raises(OSError, match="disk full"):
        write_label_png(target, np.zeros((4, 4), np.uint8))
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert not target.exists() and not list(target.parent.iterdir())
