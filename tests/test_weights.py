"""Initial weights (psdif/models/weights.py, paper §4.2): every public HRNet layout loads strictly into MSFAN's
backbone (tensor by tensor), wrong files are refused with their name and unmatched keys, ``imagenet`` fails at
once offline with download instructions, and torchvision ResNet-18 weights reach the pose and baseline
encoders. The files are built here from a randomly initialised timm model, renamed and wrapped the way each
public project writes its checkpoints; no network access."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models.hrnet import HighResolutionNet, cfg_cls

from psdif.config import ParamsError, default_params
from psdif.models import build_depth_net, build_pose_net
from psdif.models import sources as S, weights as W
from psdif.models.msfan import MSFAN
from psdif.models.pose import PoseNet
from psdif.variants import VARIANTS

torch.set_num_threads(1)

TIMM_NAME = {"w18": "hrnet_w18", "w18_small": "hrnet_w18_small_v2"}
TIMM_HEADS = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights and BN statistics (of a moderate scale, so that deep forwards stay finite), so that
    equality after loading proves the copy."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif t.ndim > 1:  # conv / linear weights: fan-in scaled
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            elif name.endswith(("running_var", ".weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))


def _zero(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for t in module.state_dict().values():
            t.zero_()


@pytest.fixture(scope="module")
def timm_models():
    """Randomly initialised timm classifiers (full state dicts, heads included), built once."""
    out = {}
    for i, (size, name) in enumerate(TIMM_NAME.items()):
        model = timm.create_model(name, pretrained=False).eval()
        _randomize(model, 10 + i)
        out[size] = model.state_dict()
    return out


@pytest.fixture(scope="module")
def encoders():
    return {size: MSFAN(size) for size in TIMM_NAME}


@pytest.fixture
def fresh(encoders):
    """An MSFAN whose backbone is zeroed and whose coordinate attention is randomised (snapshot returned)."""
    def get(size):
        enc = encoders[size]
        _zero(enc.backbone)
        _randomize(enc.attention, 99)
        return enc, {k: v.clone() for k, v in enc.attention.state_dict().items()}
    return get


def _backbone(sd):
    return OrderedDict((k, v) for k, v in sd.items() if k.split(".", 1)[0] not in TIMM_HEADS)


def _bn(prefix, n, seg=False):
    out = OrderedDict()
    for s in BN:
        out[f"{prefix}.{s}"] = torch.tensor(7) if s == "num_batches_tracked" else torch.randn(n)
    return out


# ----------------------------------------------------------------------------------- public key names

def public_hrnet_keys(cfg: dict) -> set[str]:
    """Backbone keys as HRNet-Image-Classification (cls_hrnet.py), HRNet-Semantic-Segmentation
    (seg_hrnet.py) and mmsegmentation (backbones/hrnet.py, stem norms named bn1/bn2) construct them:
    nn.Sequential indices, ``None`` (no keys) for an unchanged transition branch and the fuse diagonal."""
    keys: set[str] = set()

    def conv_bn(conv, bn):
        keys.add(f"{conv}.weight")
        keys.update(f"{bn}.{s}" for s in BN)

    def block(prefix, bottleneck, downsample):
        for i in range(1, 4 if bottleneck else 3):
            conv_bn(f"{prefix}.conv{i}", f"{prefix}.bn{i}")
        if downsample:
            conv_bn(f"{prefix}.downsample.0", f"{prefix}.downsample.1")

    conv_bn("conv1", "bn1")
    conv_bn("conv2", "bn2")
    s1 = cfg["stage1"]
    exp = 4 if s1["block_type"] == "BOTTLENECK" else 1
    for i in range(s1["num_blocks"][0]):
        block(f"layer1.{i}", exp == 4, i == 0 and 64 != s1["num_channels"][0] * exp)
    pre = [s1["num_channels"][0] * exp]
    for s in (2, 3, 4):
        st = cfg[f"stage{s}"]
        exp = 4 if st["block_type"] == "BOTTLENECK" else 1
        cur = [c * exp for c in st["num_channels"]]
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    conv_bn(f"transition{s - 1}.{i}.0", f"transition{s - 1}.{i}.1")
            else:
                for j in range(i + 1 - len(pre)):
                    conv_bn(f"transition{s - 1}.{i}.{j}.0", f"transition{s - 1}.{i}.{j}.1")
        inch = list(cur)
        n = st["num_branches"]
        for m in range(st["num_modules"]):
            for b in range(n):
                for k in range(st["num_blocks"][b]):
                    block(f"stage{s}.{m}.branches.{b}.{k}", exp == 4,
                          k == 0 and inch[b] != st["num_channels"][b] * exp)
                inch[b] = st["num_channels"][b] * exp
            for i in range(n if n > 1 else 0):
                for j in range(n):
                    p = f"stage{s}.{m}.fuse_layers.{i}.{j}"
                    if j > i:
                        conv_bn(f"{p}.0", f"{p}.1")
                    for k in range(i - j):
                        conv_bn(f"{p}.{k}.0", f"{p}.{k}.1")
        pre = cur
    return keys


@pytest.mark.parametrize("size", ["w18", "w18_small"])
def test_public_layout_key_names_equal_timm(encoders, size):
    """The backbone module paths of the official/mmseg code are timm's: the mapping is prefix stripping."""
    timm_keys = set(encoders[size].backbone.state_dict())
    public = public_hrnet_keys(cfg_cls[TIMM_NAME[size]])
    assert public == timm_keys, (sorted(public - timm_keys)[:5], sorted(timm_keys - public)[:5])


# ----------------------------------------------------------------------------------- layouts

def _timm_pth(sd, size, tmp_path):
    path = tmp_path / f"{TIMM_NAME[size]}.pth"
    torch.save(sd, path)
    return path, {g: sum(k.startswith(g + ".") for k in sd) for g in TIMM_HEADS}, sd


def _timm_safetensors(sd, size, tmp_path):
    path = tmp_path / "model.safetensors"  # timm/<name>.<tag> on the Hugging Face hub
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path, {g: sum(k.startswith(g + ".") for k in sd) for g in TIMM_HEADS}, sd


def _hrnet_cls(sd, size, tmp_path, counters=True):
    """HRNet-Image-Classification release: a plain state dict, same names as timm incl. its head, written by
    PyTorch 0.4.1 (legacy pickle format); ``counters=False``: a file without num_batches_tracked."""
    name = {"w18": "hrnetv2_w18_imagenet_pretrained.pth", "w18_small": "hrnet_w18_small_model_v2.pth"}[size]
    state = OrderedDict((k, v) for k, v in sd.items() if counters or not k.endswith("num_batches_tracked"))
    torch.save(state, tmp_path / name, _use_new_zipfile_serialization=False)
    return tmp_path / name, {g: sum(k.startswith(g + ".") for k in state) for g in TIMM_HEADS}, state


def _seg_heads(prefix="model."):
    heads = OrderedDict()
    heads[f"{prefix}last_layer.0.weight"] = torch.randn(270, 270, 1, 1)
    heads[f"{prefix}last_layer.0.bias"] = torch.randn(270)
    heads.update(_bn(f"{prefix}last_layer.1", 270))
    heads[f"{prefix}last_layer.3.weight"] = torch.randn(19, 270, 1, 1)
    heads[f"{prefix}last_layer.3.bias"] = torch.randn(19)
    return heads


def _hrnet_seg(sd, size, tmp_path, wrapper=""):
    """HRNet-Semantic-Segmentation: FullModel(model, loss).state_dict(), keys ``model.*`` + ``loss.criterion
    .weight`` (tools/test.py strips ``k[6:]``), PyTorch 1.1 legacy pickle; ``wrapper='module.'``: saved from
    the DataParallel wrapper."""
    state = OrderedDict((f"{wrapper}model.{k}", v) for k, v in _backbone(sd).items())
    state.update((wrapper + k, v) for k, v in _seg_heads().items())
    state[f"{wrapper}loss.criterion.weight"] = torch.rand(19)
    name = {"w18_small": "hrnet_w18_small_v2_cityscapes_cls19_1024x2048_trainset.pth",
            "w18": "final_state.pth"}[size]  # no public full-W18 Cityscapes file there: a self-trained one
    torch.save(state, tmp_path / name, _use_new_zipfile_serialization=False)
    return tmp_path / name, {"last_layer": 9, "loss": 1}, state


def _hrnet_seg_ocr(sd, size, tmp_path):
    """seg_hrnet_ocr.py heads (published for W48 only; here on a W18 backbone trained with that code)."""
    state = OrderedDict((f"model.{k}", v) for k, v in _backbone(sd).items())
    ocr = {"model.conv3x3_ocr.0.weight": (512, 270, 3, 3), "model.conv3x3_ocr.0.bias": (512,),
           "model.ocr_distri_head.object_context_block.f_pixel.0.weight": (256, 512, 1, 1),
           "model.ocr_distri_head.conv_bn_dropout.0.weight": (512, 1024, 1, 1),
           "model.cls_head.weight": (19, 512, 1, 1), "model.cls_head.bias": (19,),
           "model.aux_head.0.weight": (270, 270, 1, 1), "model.aux_head.3.weight": (19, 270, 1, 1)}
    state.update((k, torch.randn(s)) for k, s in ocr.items())
    state["loss.criterion.weight"] = torch.rand(19)
    torch.save(state, tmp_path / "hrnet_ocr_w18.pth")
    return tmp_path / "hrnet_ocr_w18.pth", {"conv3x3_ocr": 2, "ocr_distri_head": 2, "cls_head": 2,
                                            "aux_head": 2, "loss": 1}, state


def _mmseg(sd, size, tmp_path, meta_extra=None):
    """mmsegmentation FCN-HRNet release: {'meta': ..., 'state_dict': backbone.* + decode_head.*}."""
    state = OrderedDict((f"backbone.{k}", v) for k, v in _backbone(sd).items())
    state["decode_head.conv_seg.weight"] = torch.randn(19, 270, 1, 1)
    state["decode_head.conv_seg.bias"] = torch.randn(19)
    state["decode_head.convs.0.conv.weight"] = torch.randn(270, 270, 1, 1)
    state.update(_bn("decode_head.convs.0.bn", 270))
    meta = {"mmseg_version": "0.5.0+b2724da", "config": "norm_cfg = dict(type='SyncBN', requires_grad=True)",
            "CLASSES": ("road", "sidewalk"), "PALETTE": [[128, 64, 128], [244, 35, 232]],
            "epoch": 1, "iter": 160000, **(meta_extra or {})}
    name = {"w18": "fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth",
            "w18_small": "fcn_hr18s_512x1024_160k_cityscapes_20200602_190901-4a0797ea.pth"}[size]
    torch.save({"meta": meta, "state_dict": state}, tmp_path / name)
    return tmp_path / name, {"decode_head": 8}, state


LAYOUTS = {
    "timm_pth": _timm_pth,
    "timm_safetensors": _timm_safetensors,
    "hrnet_cls": _hrnet_cls,
    "hrnet_cls_no_counters": lambda sd, size, tmp: _hrnet_cls(sd, size, tmp, counters=False),
    "hrnet_seg": _hrnet_seg,
    "hrnet_seg_dataparallel": lambda sd, size, tmp: _hrnet_seg(sd, size, tmp, wrapper="module."),
    "hrnet_seg_ocr": _hrnet_seg_ocr,
    "mmseg": _mmseg,
    "mmseg_numpy_meta": lambda sd, size, tmp: _mmseg(sd, size, tmp, {"hook_msgs": {"best_score": np.float64(.788)}}),
}


@pytest.mark.parametrize("size", ["w18", "w18_small"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_loads_every_backbone_tensor(timm_models, fresh, tmp_path, capsys, layout, size):
    path, skipped, _ = LAYOUTS[layout](timm_models[size], size, tmp_path)
    enc, attention_before = fresh(size)
    report = W.load_encoder_weights(enc, str(path))
    source = _backbone(timm_models[size])
    own = enc.backbone.state_dict()
    counters = layout != "hrnet_cls_no_counters"
    for k, v in own.items():
        if counters or not k.endswith("num_batches_tracked"):
            assert torch.equal(v, source[k]), k
        else:
            assert int(v) == 0, k
    for k, v in enc.attention.state_dict().items():  # coordinate attention keeps its init
        assert torch.equal(v, attention_before[k]), k
    n_counters = sum(k.endswith("num_batches_tracked") for k in own)
    assert report.loaded == len(own) - (0 if counters else n_counters)
    assert report.total == len(own) + len(attention_before)
    assert report.skipped == {g: n for g, n in skipped.items() if n}
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"model.encoder_weights: loaded {report.loaded}/{report.total} MSFAN encoder tensors "
                           f"from {path}")
    for group, n in report.skipped.items():
        assert f"{group} {n}" in line


def test_loaded_backbone_computes_timm_features(timm_models, fresh, tmp_path):
    """After an mmseg-layout load the backbone's stage outputs equal the timm model's own (same weights)."""
    path, _, _ = _mmseg(timm_models["w18_small"], "w18_small", tmp_path)
    enc, _ = fresh("w18_small")
    W.load_encoder_weights(enc, path, verbose=False)
    ref = timm.create_model("hrnet_w18_small_v2", pretrained=False)
    ref.load_state_dict(timm_models["w18_small"])
    enc.eval(), ref.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        mine = enc.stage_outputs(x)[4]
        want = ref.stages(ref.act2(ref.bn2(ref.conv2(ref.act1(ref.bn1(ref.conv1(x)))))))
    for a, b in zip(mine, want):
        torch.testing.assert_close(a, b)


def test_build_depth_net_loads_encoder_weights(timm_models, tmp_path):
    path, _, _ = _hrnet_seg(timm_models["w18_small"], "w18_small", tmp_path)
    cfg = dataclasses.replace(default_params().model, msfan_size="w18_small", encoder_weights=str(path),
                              pose_weights=None)
    net = build_depth_net(VARIANTS["full"], cfg)
    source = _backbone(timm_models["w18_small"])
    for k, v in net.encoder.backbone.state_dict().items():
        assert torch.equal(v, source[k]), k


# ----------------------------------------------------------------------------------- refusals

def test_resnet50_file_refused(encoders, tmp_path):
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as info:
        W.load_encoder_weights(encoders["w18_small"], path)
    msg = str(info.value)
    assert "resnet50-0676ba61.pth" in msg and "model.encoder_weights" in msg
    m = re.search(r"matches (\d+) of the (\d+) HRNet backbone", msg)
    assert m and int(m.group(1)) < int(m.group(2)) // 4  # only the stem BN and layer1 shapes coincide
    assert "missing from the file (first: ['conv2.weight', 'bn2.weight'" in msg
    assert "unused and not a known head (first: ['layer1.2.conv1.weight'" in msg  # ResNet-50 has 3 blocks there
    assert "conv1.weight: file (64, 3, 7, 7) vs encoder (64, 3, 3, 3)" in msg
    assert "the file holds no HRNet" in msg


def test_hrnet_w32_checkpoint_into_w18_refused(encoders, tmp_path):
    w32 = HighResolutionNet(cfg_cls["hrnet_w32"], head="none", num_classes=0)
    path = tmp_path / "fcn_hr32_cityscapes.pth"
    torch.save({"meta": {}, "state_dict": {f"backbone.{k}": v for k, v in w32.state_dict().items()}}, path)
    with pytest.raises(ValueError) as info:
        W.load_encoder_weights(encoders["w18"], path)
    msg = str(info.value)
    assert "fcn_hr32_cityscapes.pth" in msg and "with another shape (first: transition1.0.0.weight: file " \
        "(32, 256, 3, 3) vs encoder (18, 256, 3, 3)" in msg
    assert "HRNet-W32" in msg and "msfan_size w18" in msg


def test_w18_file_into_w18_small_refused_not_truncated(timm_models, encoders, tmp_path):
    path, _, _ = _mmseg(timm_models["w18"], "w18", tmp_path)
    with pytest.raises(ValueError) as info:
        W.load_encoder_weights(encoders["w18_small"], path)
    msg = str(info.value)
    # every w18_small tensor exists in a W18 file: the extra blocks/modules are what refuses it
    assert "missing from the file" not in msg and "unused and not a known head (first: ['layer1.2." in msg
    assert "the file holds HRNet-W18: set model.msfan_size w18" in msg


def test_w18_small_file_into_w18_refused(timm_models, encoders, tmp_path):
    path, _, _ = _hrnet_seg(timm_models["w18_small"], "w18_small", tmp_path)
    with pytest.raises(ValueError, match=r"hrnet_w18_small_v2_cityscapes.*missing from the file.*"
                                         r"HRNet-W18-Small-v2: set model.msfan_size w18_small"):
        W.load_encoder_weights(encoders["w18"], path)


@pytest.mark.parametrize("edit", ["drop_one", "extra_unknown", "wrong_shape"])
def test_single_mismatch_refused(timm_models, encoders, tmp_path, edit):
    state = OrderedDict((f"model.{k}", v) for k, v in _backbone(timm_models["w18_small"]).items())
    key = "model.stage4.1.fuse_layers.3.0.2.0.weight"
    if edit == "drop_one":
        del state[key]
        want = r"1 missing from the file \(first: \['stage4.1.fuse_layers.3.0.2.0.weight'\]\)"
    elif edit == "extra_unknown":
        state["model.head_x.weight"] = torch.randn(3)
        want = r"1 file tensors unused and not a known head \(first: \['head_x.weight'\]\)"
    else:
        state[key] = torch.randn(1, 1, 3, 3)
        want = r"1 with another shape \(first: stage4.1.fuse_layers.3.0.2.0.weight: file \(1, 1, 3, 3\)"
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"edited.pth: matches \d+ of the \d+ .*" + want):
        W.load_encoder_weights(encoders["w18_small"], path)


def test_unreadable_files_refused(encoders, tmp_path):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="truncated.pth: not a readable torch"):
        W.load_encoder_weights(encoders["w18_small"], bad)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="list.pth: holds a list, not a state dict"):
        W.load_encoder_weights(encoders["w18_small"], listing)
    objects = tmp_path / "objects.pth"
    torch.save({"meta": {"time": datetime.datetime(2020, 6, 2)}, "state_dict": {"a": torch.ones(1)}}, objects)
    with pytest.raises(ValueError, match=r"objects.pth: holds Python objects besides tensors and plain values \(datetime"):
        W.load_encoder_weights(encoders["w18_small"], objects)
    with pytest.raises(FileNotFoundError, match="model.encoder_weights=.*nope.pth: no such file"):
        W.load_encoder_weights(encoders["w18_small"], tmp_path / "nope.pth")


# ----------------------------------------------------------------------------------- imagenet / params check

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Offline machine with empty caches; any network probe fails the test."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("network probe attempted")

    monkeypatch.setattr(S, "_reachable", no_network)
    return tmp_path


def test_imagenet_encoder_offline_fails_at_once(offline, encoders):
    for size, repo in (("w18", "hrnet_w18.ms_aug_in1k"), ("w18_small", "hrnet_w18_small_v2.ms_in1k")):
        want = (rf"model.encoder_weights: imagenet weights \(timm/{re.escape(repo)}.*offline.*download "
                rf"https://huggingface.co/timm/{re.escape(repo)}/resolve/main/model.safetensors.*place it at "
                rf"data/checkpoints/{re.escape(repo)}.safetensors and set model.encoder_weights: "
                rf"data/checkpoints/{re.escape(repo)}.safetensors")
        with pytest.raises(ParamsError, match=want):
            S.check_weights_source("imagenet", "model.encoder_weights", size)
    with pytest.raises(ParamsError, match="model.encoder_weights: imagenet weights .*offline"):
        W.load_encoder_weights(encoders["w18_small"], "imagenet")


def test_imagenet_pose_offline_fails_at_once(offline):
    want = (r"model.pose_weights: imagenet weights \(torchvision ResNet18_Weights.IMAGENET1K_V1\).*offline.*"
            r"download https://download.pytorch.org/models/resnet18-f37072fd.pth.*place it at "
            r"data/checkpoints/resnet18-f37072fd.pth and set model.pose_weights: data/checkpoints/resnet18")
    with pytest.raises(ParamsError, match=want):
        S.check_weights_source("imagenet", "model.pose_weights")
    cfg = dataclasses.replace(default_params().model, pose_weights="imagenet", pose_width=1.0)
    with pytest.raises(ParamsError, match=want):
        build_pose_net(cfg)


def test_imagenet_from_hf_cache_loads_offline(offline, timm_models, fresh):
    snap = offline / "hf" / "models--timm--hrnet_w18_small_v2.ms_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0123abcd")
    (snap / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(dict(timm_models["w18_small"]), str(snap / "snapshots" / "0123abcd" / "model.safetensors"))
    S.check_weights_source("imagenet", "model.encoder_weights", "w18_small")  # cached: passes offline
    enc, _ = fresh("w18_small")
    report = W.load_encoder_weights(enc, "imagenet")
    assert report.source.endswith("model.safetensors") and "safetensors" in report.layout
    source = _backbone(timm_models["w18_small"])
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(v, source[k]), k


def test_imagenet_resnet18_from_torch_hub_cache(offline):
    tv = torchvision.models.resnet18(weights=None)
    _randomize(tv, 3)
    (offline / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv.state_dict(), offline / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    S.check_weights_source("imagenet", "model.pose_weights")
    pose = build_pose_net(dataclasses.replace(default_params().model, pose_weights="imagenet", pose_width=1.0))
    assert torch.equal(pose.encoder.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)


def test_check_probes_the_hub_when_not_flagged(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    probed = []
    monkeypatch.setattr(S, "_reachable", lambda url, timeout=5.0: probed.append(url) or False)
    with pytest.raises(ParamsError, match=r"huggingface.co is not reachable within 5 s"):
        S.check_weights_source("imagenet", "model.encoder_weights", "w18")
    with pytest.raises(ParamsError, match=r"download.pytorch.org is not reachable within 5 s"):
        S.check_weights_source("imagenet", "model.pose_weights")
    assert len(probed) == 2
    monkeypatch.setattr(S, "_reachable", lambda url, timeout=5.0: True)
    S.check_weights_source("imagenet", "model.encoder_weights", "w18")  # online: fetched when loading


def test_check_weights_source_paths_and_values(tmp_path):
    S.check_weights_source(None, "model.encoder_weights", "w18")
    with pytest.raises(ParamsError, match=r"model.encoder_weights=data/checkpoints/none.pth: no such file"):
        S.check_weights_source("data/checkpoints/none.pth", "model.encoder_weights", "w18")
    with pytest.raises(ParamsError, match=r"model.pose_weights=ImageNet: no such file \(did you mean imagenet"):
        S.check_weights_source("ImageNet", "model.pose_weights")
    with pytest.raises(ParamsError, match="imagenet weights exist for model.msfan_size w18 and w18_small, not 'tiny'"):
        S.check_weights_source("imagenet", "model.encoder_weights", "tiny")
    real = tmp_path / "w.pth"
    real.write_bytes(b"x")
    S.check_weights_source(str(real), "model.pose_weights")
    with pytest.raises(ValueError, match="unknown weights param"):
        S.check_weights_source(None, "model.weights")
    cfg = dataclasses.replace(default_params().model, encoder_weights=None, pose_weights=str(tmp_path / "no"))
    with pytest.raises(ParamsError, match="model.pose_weights=.*no: no such file"):
        S.check_model_weights(cfg)


# ----------------------------------------------------------------------------------- ResNet-18

@pytest.fixture(scope="module")
def resnet18():
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomize(tv, 5)
    return tv


def test_torchvision_resnet18_into_pose_net(resnet18, tmp_path, capsys):
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(resnet18.state_dict(), path)
    net = PoseNet(1.0)
    _zero(net.encoder)
    report = W.load_pose_weights(net, path)
    src = resnet18.state_dict()
    own = net.encoder.state_dict()
    for k, v in own.items():
        want = torch.cat([src[k]] * 2, 1) / 2 if k == "conv1.weight" else src[k]
        assert torch.equal(v, want), k
    assert own["conv1.weight"].shape == (64, 6, 7, 7)
    assert (report.loaded, report.total, report.skipped) == (len(own), len(own), {"fc": 2})
    line = capsys.readouterr().out
    assert f"model.pose_weights: loaded {len(own)}/{len(own)} pose encoder tensors" in line
    assert "fc 2" in line and "repeated over 2 frames" in line


def test_torchvision_resnet18_into_baseline_encoder(resnet18, tmp_path):
    path = tmp_path / "model.safetensors"  # torchvision layout saved as safetensors, under DataParallel
    save_file({f"module.{k}": v.contiguous() for k, v in resnet18.state_dict().items()}, str(path))
    cfg = dataclasses.replace(default_params().model, pose_weights=str(path), baseline_width=1.0)
    net = build_depth_net(VARIANTS["baseline"], cfg)
    src = resnet18.state_dict()
    for k, v in net.encoder.state_dict().items():
        assert torch.equal(v, src[k]), k


def test_other_resnets_refused(tmp_path):
    path = tmp_path / "resnet34-b627a593.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"model.pose_weights=.*resnet34-b627a593.pth: matches \d+ of the \d+ "
                                         r"pose encoder tensors.*unused and not a known head \(first: \['layer1.2"):
        W.load_pose_weights(PoseNet(1.0), path)
    path = tmp_path / "hrnet.pth"
    torch.save(HighResolutionNet(cfg_cls["hrnet_w18_small_v2"], head="none").state_dict(), path)
    with pytest.raises(ValueError, match=r"hrnet.pth: matches \d+ of the \d+ pose encoder.*missing from the file"):
        W.load_pose_weights(PoseNet(1.0), path)
