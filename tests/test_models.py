"""Networks (psdif/models): shapes per variant, Eqs. 2-7 against hand/manual references, weight loading from
timm / torchvision / HRNet-seg formats, gradient coverage, and the ONNX round trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import timm
import torch
import torchvision

from psdif.config import default_params
from psdif.geometry import disp_to_depth
from psdif.models import (DepthOutput, DepthPredictor, build_depth_net, build_pose_net,
                          export_onnx)
from psdif.models.layers import CoordinateAttention, ResNet18Encoder, SpatialAttention, upsample2x
from psdif.models.msfan import MSFAN
from psdif.models.pose import PoseNet
from psdif.models.weights import load_encoder_weights, load_pose_weights
from psdif.variants import VARIANTS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cfg():
    return dataclasses.replace(default_params().model, msfan_size="tiny", encoder_weights=None, pose_weights=None)


def _randomize_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics/affine so that loading and eval-mode comparisons are meaningful."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))


# ------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("hw", [(192, 640), (96, 320), (64, 224)])
def test_output_shapes_every_variant(cfg, variant, hw):
    torch.manual_seed(0)
    v = VARIANTS[variant]
    net = build_depth_net(v, cfg).eval()
    h, w = hw
    images = torch.rand(2, 3, h, w)
    with torch.no_grad():
        out = net(images)
        disp0 = net.forward_depth(images)
    assert isinstance(out, DepthOutput)
    assert [tuple(d.shape) for d in out.disparities] == [(2, 1, h >> s, w >> s) for s in range(4)]
    for d in out.disparities:
        assert d.min() > 0 and d.max() < 1
    assert sorted(out.features) == [1, 2, 3]
    widths = cfg.decoder_channels
    for s, f in out.features.items():
        assert tuple(f.shape) == (2, widths[s], h >> s, w >> s)
    if v.seg:
        assert tuple(out.seg_logits.shape) == (2, cfg.num_classes, h, w)
    else:
        assert out.seg_logits is None
    # the inference path computes exactly the training path's scale-0 disparity
    torch.testing.assert_close(disp0, out.disparities[0], rtol=1e-5, atol=1e-6)


def test_w18_full_model_shapes(cfg):
    net = build_depth_net(VARIANTS["full"], dataclasses.replace(cfg, msfan_size="w18")).eval()
    assert net.encoder.channels == [64, 310, 108, 144, 144]
    with torch.no_grad():
        feats = net.encoder(torch.rand(1, 3, 96, 320))
        out = net(torch.rand(1, 3, 96, 320))
    assert [tuple(f.shape) for f in feats] == [(1, c, 96 >> (l + 1), 320 >> (l + 1))
                                               for l, c in enumerate([64, 310, 108, 144, 144])]
    assert tuple(out.seg_logits.shape) == (1, 19, 96, 320)
    assert tuple(out.disparities[3].shape) == (1, 1, 12, 40)


# ------------------------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("variant", ["full", "msfan_seg", "msfan", "baseline"])
def test_gradient_reaches_every_parameter(cfg, variant):
    torch.manual_seed(0)
    net = build_depth_net(VARIANTS[variant], cfg).train()
    out = net(torch.rand(2, 3, 64, 96))
    loss = sum(d.sum() for d in out.disparities) + sum(f.sum() for f in out.features.values())
    if out.seg_logits is not None:
        loss = loss + out.seg_logits.sum()
    loss.backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"parameters without gradient: {dead}"


def test_pose_net_starts_at_zero_motion_gradient_and_scale(cfg):
    """Zero motion at init (the last conv is zero): identity warps, and the first backward reaches the
    last conv; once it has moved, every parameter gets a gradient."""
    net = build_pose_net(cfg).train()
    axisangle, translation = net(torch.rand(3, 6, 64, 96))
    assert axisangle.shape == (3, 1, 3) and translation.shape == (3, 1, 3)
    assert not axisangle.any() and not translation.any()
    (axisangle.sum() + translation.sum()).backward()
    last = net.decoder.net[-1]
    assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    with torch.no_grad():
        last.weight.normal_(0, 0.01)
    net.zero_grad()
    axisangle, translation = net(torch.rand(3, 6, 64, 96))
    (axisangle.sum() + translation.sum()).backward()
    assert all(p.grad is not None and torch.any(p.grad != 0) for p in net.parameters())
    # the 0.01 output scaling: the pose equals 0.01 x the mean of the last conv's output
    captured = {}
    last.register_forward_hook(lambda m, i, o: captured.setdefault("raw", o))
    net.eval()
    with torch.no_grad():
        a, t = net(torch.rand(1, 6, 64, 96))
    raw = captured["raw"].mean(dim=(2, 3))
    torch.testing.assert_close(torch.cat([a, t], dim=-1).view(1, 6), 0.01 * raw)


# ------------------------------------------------------------------------------------------------- Eqs. 2-7

def test_spatial_attention_hand_computed():
    """SAM(x) = x * sigmoid(conv([mean_c, max_c])); centre-tap-only kernel makes it a per-pixel formula."""
    sam = SpatialAttention()
    with torch.no_grad():
        sam.conv.weight.zero_()
        sam.conv.weight[0, 0, 3, 3] = 0.5   # weight of the channel mean
        sam.conv.weight[0, 1, 3, 3] = -2.0  # weight of the channel max
        sam.conv.bias.fill_(0.25)
    x = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[3.0, 0.0], [-1.0, 1.0]]]])  # [1, 2, 2, 2]
    out = sam(x)
    for i in range(2):
        for j in range(2):
            a, b = x[0, 0, i, j].item(), x[0, 1, i, j].item()
            g = 1 / (1 + math.exp(-(0.5 * (a + b) / 2 - 2.0 * max(a, b) + 0.25)))
            assert out[0, 0, i, j].item() == pytest.approx(a * g, rel=1e-6)
            assert out[0, 1, i, j].item() == pytest.approx(b * g, rel=1e-6)


def test_coordinate_attention_matches_manual_numpy():
    torch.manual_seed(3)
    ca = CoordinateAttention(4, reduction=32, min_mid=3).eval()
    _randomize_bn(ca)
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        out = ca(x).numpy()
    X = x.numpy().astype(np.float64)
    W1 = ca.conv.weight.detach().numpy()[:, :, 0, 0]; b1 = ca.conv.bias.detach().numpy()
    Wh = ca.conv_h.weight.detach().numpy()[:, :, 0, 0]; bh = ca.conv_h.bias.detach().numpy()
    Ww = ca.conv_w.weight.detach().numpy()[:, :, 0, 0]; bw = ca.conv_w.bias.detach().numpy()
    bn = ca.bn
    scale = bn.weight.detach().numpy() / np.sqrt(bn.running_var.numpy() + bn.eps)
    shift = bn.bias.detach().numpy() - bn.running_mean.numpy() * scale

    def hswish(v):
        return v * np.clip(v + 3, 0, 6) / 6

    def sig(v):
        return 1 / (1 + np.exp(-v))

    expected = np.empty_like(X)
    for n in range(2):
        for i in range(3):
            for j in range(5):
                zh = X[n, :, i, :].mean(axis=1)          # pool over W at row i
                zw = X[n, :, :, j].mean(axis=1)          # pool over H at column j
                yh = hswish((W1 @ zh + b1) * scale + shift)
                yw = hswish((W1 @ zw + b1) * scale + shift)
                expected[n, :, i, j] = X[n, :, i, j] * sig(Wh @ yh + bh) * sig(Ww @ yw + bw)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _capture(modules, store, key):
    for l, m in enumerate(modules):
        m.register_forward_hook(lambda mod, inp, out, l=l: store.__setitem__((key, l), (inp[0], out)))


@pytest.mark.parametrize("variant", ["full", "msfan_seg"])
def test_psdifm_equations(cfg, variant):
    """Eqs. 3-7 recomputed from the captured Feat_l / Seg_l: FF_l = Feat_l + SAM(Seg_l) (Eq. 5) and
    FS_l = Seg_l + SAM(Feat_l) (Eq. 6) with the exchange, else Feat_l / Seg_l; the input of F at level l is
    concat(U(FF_{l+1}), f_l) (depth) and concat(U(FS_{l+1}), f_l) (semantics); disparity 0 from F(U(FF_0)),
    the semantic logits from F(U(FS_0))."""
    torch.manual_seed(1)
    net = build_depth_net(VARIANTS[variant], cfg).eval()
    dec = net.decoder
    store = {}
    _capture(dec.depth_convs, store, "feat")
    _capture(dec.seg_convs, store, "seg")
    images = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        f = net.encoder(net.normalize(images))
        out = net(images)
        ff = {l + 1: out.features[l + 1] for l in range(3)}  # features[s] = FF_{s-1}
        for l in range(3):
            feat, seg = store[("feat", l)][1], store[("seg", l)][1]
            want = feat + dec.sam_seg[l](seg) if variant == "full" else feat
            torch.testing.assert_close(out.features[l + 1], want)
        for l in range(3):  # Eq. 3 input at level l uses FF_{l+1}
            inp = store[("feat", l)][0]
            up = upsample2x(ff[l + 2]) if l < 2 else None
            if up is not None:
                torch.testing.assert_close(inp[:, : up.shape[1]], up)
            torch.testing.assert_close(inp[:, -f[l].shape[1]:], f[l])
        torch.testing.assert_close(store[("feat", 3)][0], torch.cat([upsample2x(f[4]), f[3]], 1))  # FF_4 = f_4
        torch.testing.assert_close(store[("seg", 3)][0], torch.cat([upsample2x(f[4]), f[3]], 1))   # FS_4 = f_4
        disp0 = dec.disp_heads[0](dec.depth_up(upsample2x(out.features[1])))
        torch.testing.assert_close(out.disparities[0], disp0)
        disp1 = dec.disp_heads[1](out.features[1])  # Eq. 7: F_1 = FF_0
        torch.testing.assert_close(out.disparities[1], disp1)
        fs = {}
        for l in range(4):  # Eq. 6: FS_l = Seg_l + SAM(Feat_l) (exchange) or Seg_l
            feat, seg = store[("feat", l)][1], store[("seg", l)][1]
            fs[l] = seg + dec.sam_depth[l](feat) if variant == "full" else seg
            if variant == "full":  # the gate is not trivial: Seg_l * SAM(Feat_l) would fail the checks below
                assert not torch.allclose(fs[l], seg * dec.sam_depth[l](feat), atol=1e-3)
                assert dec.sam_depth[l](feat).abs().max() > 1e-3
        for l in range(3):  # Eq. 4 input at level l uses FS_{l+1}
            up = upsample2x(fs[l + 1])
            torch.testing.assert_close(store[("seg", l)][0][:, : up.shape[1]], up)
        logits = dec.seg_head(dec.seg_up(upsample2x(fs[0])))  # semantics from FS_0 at full size
        torch.testing.assert_close(out.seg_logits, logits)


def test_msfan_levels_concatenate_every_stage(cfg):
    """Eq. 2: f_l = CA(concat of every stage's branch at level l), checked with the CA layers' own forward."""
    torch.manual_seed(2)
    enc = MSFAN("tiny").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stages = enc.stage_outputs(x)
        f = enc(x)
        torch.testing.assert_close(f[0], enc.attention[0](stages[0][0]))
        for l in range(1, 5):
            parts = [s[l - 1] for s in stages[1:] if len(s) >= l]
            assert len(parts) == 5 - l if l > 1 else len(parts) == 4
            torch.testing.assert_close(f[l], enc.attention[l](torch.cat(parts, 1)))


def test_disp_to_depth_hand_values():
    d = disp_to_depth(torch.tensor([0.0, 1.0, 0.5]), 0.1, 100.0)[1]
    torch.testing.assert_close(d, torch.tensor([100.0, 0.1, 1 / (0.01 + 0.5 * 9.99)]))


# ------------------------------------------------------------------------------------------------- weights

@pytest.fixture(scope="module")
def timm_w18():
    torch.manual_seed(4)
    model = timm.create_model("hrnet_w18", pretrained=False).eval()
    _randomize_bn(model)
    return model


def test_timm_hrnet_w18_state_dict_loads_and_matches(timm_w18, tmp_path):
    path = tmp_path / "hrnet_w18.pth"
    torch.save(timm_w18.state_dict(), path)
    enc = MSFAN("w18").eval()
    load_encoder_weights(enc, path)
    ref_state = timm_w18.state_dict()
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        stages = enc.stage_outputs(x)
        stem = timm_w18.act1(timm_w18.bn1(timm_w18.conv1(x)))
        final = timm_w18.stages(timm_w18.act2(timm_w18.bn2(timm_w18.conv2(stem))))
    torch.testing.assert_close(stages[0][0], stem)
    assert len(final) == 4
    for mine, ref in zip(stages[4], final):
        torch.testing.assert_close(mine, ref)


def test_hrnet_cityscapes_checkpoint_loads(timm_w18, tmp_path):
    """HRNet-Semantic-Segmentation layout: 'model.' + timm backbone names, plus last_layer and loss keys."""
    backbone = {k: v for k, v in timm_w18.state_dict().items()
                if not k.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier"))}
    ckpt = {f"model.{k}": v for k, v in backbone.items()}
    ckpt["model.last_layer.0.weight"] = torch.randn(270, 270, 1, 1)
    ckpt["model.last_layer.3.weight"] = torch.randn(19, 270, 1, 1)
    ckpt["loss.criterion.weight"] = torch.ones(19)
    path = tmp_path / "hrnet_w18_cityscapes.pth"
    torch.save({"state_dict": ckpt}, path)
    enc = MSFAN("w18")
    load_encoder_weights(enc, path)
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(v, backbone[k]), k
    # a missing backbone key is an error naming the file
    del ckpt["model.stage4.2.fuse_layers.3.0.0.0.weight"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="hrnet_w18_cityscapes.pth.*1 missing"):
        load_encoder_weights(MSFAN("w18"), path)


def test_w18_weights_into_tiny_encoder_fail_clearly(timm_w18, tmp_path):
    path = tmp_path / "w18.pth"
    torch.save(timm_w18.state_dict(), path)
    with pytest.raises(ValueError, match="msfan_size w18"):
        load_encoder_weights(MSFAN("tiny"), path)


def test_pose_conv1_duplicated_and_halved(tmp_path):
    torch.manual_seed(5)
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomize_bn(tv)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    net = PoseNet(width=1.0).eval()
    load_pose_weights(net, path)
    w = tv.conv1.weight
    torch.testing.assert_close(net.encoder.conv1.weight, torch.cat([w, w], 1) / 2, rtol=0, atol=0)
    assert torch.equal(net.encoder.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    # a pair of identical frames gives the pretrained single-frame response
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        pair_feat = net.encoder(net.normalize(torch.cat([x, x], 1)))[-1]
        xn = net.normalize(torch.cat([x, x], 1))[:, :3]
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(xn))))))))
    torch.testing.assert_close(pair_feat, ref, rtol=1e-4, atol=1e-4)


def test_resnet18_width1_is_torchvision(tmp_path):
    tv = torchvision.models.resnet18(weights=None)
    enc = ResNet18Encoder(3, 1.0)
    tv_keys = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in enc.state_dict().items()} == tv_keys
    assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for n, p in tv.named_parameters()
                                                          if not n.startswith("fc."))



def test_builders_load_torchvision_weights_from_params(cfg, tmp_path):
    """model.pose_weights feeds the pose encoder (6-ch conv1) and the baseline's ResNet-18 encoder (width 1.0)."""
    torch.manual_seed(7)
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomize_bn(tv)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    wcfg = dataclasses.replace(cfg, pose_weights=str(path), baseline_width=1.0, pose_width=1.0)
    base = build_depth_net(VARIANTS["baseline"], wcfg).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        e = base.encoder(base.normalize(x))
        xn = base.normalize(x)
        ref = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(xn))))))
    torch.testing.assert_close(e[2], ref, rtol=1e-4, atol=1e-5)
    pose = build_pose_net(wcfg)
    torch.testing.assert_close(pose.encoder.conv1.weight[:, 3:], tv.conv1.weight / 2)
    with pytest.raises(ValueError, match="model.pose_weights"):
        build_pose_net(dataclasses.replace(wcfg, pose_width=0.5))

# ------------------------------------------------------------------------------------------------- ONNX

def test_onnx_round_trip(cfg, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(6)
    net = build_depth_net(VARIANTS["full"], cfg)
    _randomize_bn(net)
    predictor = DepthPredictor(net, cfg.min_depth, cfg.max_depth).eval()
    path = export_onnx(predictor, tmp_path / "psdif.onnx", 64, 224)
    images = torch.rand(2, 3, 64, 224)
    with torch.no_grad():
        want = predictor(images).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["depth"], {"image": images.numpy()})[0]
    assert got.shape == (2, 1, 64, 224)
    assert want.min() >= cfg.min_depth * (1 - 1e-6) and want.max() <= cfg.max_depth * (1 + 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=0)
    assert not list(tmp_path.glob("*.onnx.tmp*")) and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------------------------------------- compile

def test_full_net_traces_without_graph_breaks(cfg):
    """design.md §5: nothing in the depth net may stop torch.compile (fullgraph raises on any graph break)."""
    torch._dynamo.reset()
    net = build_depth_net(VARIANTS["full"], cfg).eval()
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        got, want = compiled(x), net(x)
    torch.testing.assert_close(got.seg_logits, want.seg_logits)
    torch.testing.assert_close(got.disparities[0], want.disparities[0])
