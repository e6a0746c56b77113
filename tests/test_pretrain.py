"""The pretrain stage (psdif/pretrain.py, stages/pretrain.py): it learns the ground truth, is deterministic and
resumes exactly; its files load through psdif.models.weights like published ones (the ``pretrain`` token);
placeholders and misuse are refused by name."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from psdif import pretrain as pt
from psdif.config import ParamsError, default_params, parse_params, preset_path, to_dict
from psdif.models import build_depth_net, build_pose_net
from psdif.models import sources as S, weights as W
from psdif.models.layers import ResNet18Encoder
from psdif.variants import VARIANTS
from tests.test_data import FOLDER, frame_labels, write_tiny_kitti

REPO = Path(__file__).resolve().parents[1]
H, W_ = 64, 128


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny KITTI layout of tests/test_data.py with its label maps as the generator's ground truth
    (class 1 where the red channel is 255, 2 elsewhere, 7 on the top rows: learnable from the image)."""
    root = tmp_path_factory.mktemp("pretrain")
    raw, labels, _ = write_tiny_kitti(root, frames=range(0, 12))
    drive = FOLDER.split("/")[-1]
    for side, cam in (("l", 2), ("r", 3)):
        dest = raw / "synthetic_gt" / drive / f"semantic_0{cam}"
        dest.mkdir(parents=True)
        for png in (labels / FOLDER / f"image_0{cam}" / "data").glob("*.png"):
            shutil.copy(png, dest / png.name)
    return raw


def cfg(**kw):
    base = dict(steps=6, batch_size=4, lr=1e-3, head_channels=8, seed=3, checkpoint_every=2)
    base.update(kw)
    return dataclasses.replace(default_params().pretrain, **base)


def samples(tiny):
    return pt.load_samples(tiny, pt.drive_frames(tiny, [FOLDER]), "png", H, W_)


KEYS = [S.ENCODER_KEY, S.POSE_KEY]


def test_samples_are_every_frame_of_both_cameras_with_its_ground_truth(tiny):
    s = samples(tiny)
    assert s.images.shape == (24, 3, H, W_) and s.labels.shape == (24, H, W_)
    assert 0 <= s.images.min() and s.images.max() <= 1
    # frame 5 of the left camera (sorted: l frames 0..11 first): its label map, resized nearest
    from psdif.data.images import resize_nearest
    np.testing.assert_array_equal(s.labels[5].numpy(), resize_nearest(frame_labels(5), H, W_))
    missing = tiny.parent / "missing_gt"
    shutil.copytree(tiny, missing, ignore=shutil.ignore_patterns("synthetic_gt"))
    with pytest.raises(FileNotFoundError, match=r"semantic ground truth of frame .*drive_0001_sync 0 l"):
        pt.load_samples(missing, pt.drive_frames(missing, [FOLDER]), "png", H, W_)


def test_pretraining_learns_the_ground_truth(tiny):
    """The labels follow the image (red = class 1): 40 steps reach a pixel accuracy far above the majority
    class share (0.60), for both encoders."""
    s = samples(tiny)
    majority = max(float((s.labels == c).float().mean()) for c in (1, 2, 7))
    model = dataclasses.replace(default_params().model, msfan_size="tiny", pose_width=0.25)
    result = pt.pretrain(KEYS, model, cfg(steps=40, lr=3e-3), s)
    for k in KEYS:
        scores = pt.segmentation_scores(result.nets[k], s)
        assert scores["pixel_acc"] > max(0.85, majority + 0.2), (k, scores, majority)
        assert result.losses[k][-1] < result.losses[k][0]


def test_deterministic_and_resume_is_exact(tiny, tmp_path):
    s = samples(tiny)
    model = default_params().model
    a = pt.pretrain(KEYS, model, cfg(), s)
    b = pt.pretrain(KEYS, model, cfg(), s)
    run = tmp_path / "run"

    class Stop(Exception):
        pass
    calls = {"n": 0}
    original = pt.draw_batch

    def stopping(*args):
        calls["n"] += 1
        if calls["n"] == 4:   # after the checkpoint at step 2, during step 4
            raise Stop
        return original(*args)
    pt.draw_batch = stopping
    try:
        with pytest.raises(Stop):
            pt.pretrain(KEYS, model, cfg(), s, run, "d")
    finally:
        pt.draw_batch = original
    assert (run / "last.pt").exists()
    c = pt.pretrain(KEYS, model, cfg(), s, run, "d")
    for k in KEYS:
        for name, t in a.states[k].items():
            assert torch.equal(t, b.states[k][name]), (k, name)
            assert torch.equal(t, c.states[k][name]), (k, name)
    with pytest.raises(RuntimeError, match="another pretraining configuration"):
        pt.pretrain(KEYS, model, cfg(lr=2e-3), s, run, "d")


def _stage(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_stage", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(tmp_path, tiny, raw_params: dict) -> Path:
    """A work folder with params.yaml and the filtered lists (train and val: the tiny drive's frames)."""
    from psdif.data.kitti import FrameRef, write_split

    work = tmp_path / "project"
    work.mkdir()
    raw_params["data"]["raw_root"] = str(tiny)
    (work / "params.yaml").write_text(yaml.safe_dump(raw_params))
    write_split(work / "data/lists/train_files.txt", [FrameRef(FOLDER, i, "l") for i in range(1, 11)])
    write_split(work / "data/lists/val_files.txt", [])
    return work


def test_stage_files_load_through_the_weights_loaders(tiny, tmp_path, monkeypatch, capsys):
    """The stage's files, named by the token, load strictly like published ones: the MSFAN backbone gets the
    file's tensors (attention keeps its init), the baseline encoder the ResNet-18 tensors, the pose net
    the same with conv1 spread over its two frames."""
    raw = yaml.safe_load(preset_path("embedded").read_text())
    raw["data"].update(height=H, width=W_)
    raw["pretrain"].update(steps=3, batch_size=2, checkpoint_every=1, head_channels=8)
    work = _project(tmp_path, tiny, raw)
    monkeypatch.chdir(work)
    _stage("pretrain").main([])
    p = parse_params(raw)
    assert (p.model.encoder_weights, p.model.pose_weights) == ("pretrain", "pretrain")
    msfan_file = torch.load(S.PRETRAIN_FILES[S.ENCODER_KEY], weights_only=True)
    resnet_file = torch.load(S.PRETRAIN_FILES[S.POSE_KEY], weights_only=True)
    assert msfan_file["meta"]["encoder"] == "msfan" and resnet_file["meta"]["pretrain"]["steps"] == 3
    assert not list(Path("data/runs").glob("pretrain-*/last.pt"))   # complete: nothing left to resume
    net = build_depth_net(VARIANTS["full"], p.model)
    for k, v in net.encoder.backbone.state_dict().items():
        assert torch.equal(v, msfan_file["state_dict"][k]), k
    base = build_depth_net(VARIANTS["baseline"], p.model)
    pose = build_pose_net(p.model)
    src = resnet_file["state_dict"]
    for k, v in base.encoder.state_dict().items():
        assert torch.equal(v, src[k]), k
        want = torch.cat([src[k]] * 2, 1) / 2 if k == "conv1.weight" else src[k]
        assert torch.equal(pose.encoder.state_dict()[k], want), k
    out = capsys.readouterr().out
    assert "model.encoder_weights: loaded" in out and "from data/pretrain/msfan.pt" in out
    assert "coordinate-attention tensors keep their init" in out and "repeated over 2 frames" in out


def test_paper_preset_writes_placeholders_that_the_loader_refuses(tiny, tmp_path, monkeypatch):
    raw = yaml.safe_load(preset_path("paper").read_text())
    work = _project(tmp_path, tiny, raw)
    monkeypatch.chdir(work)
    stage = _stage("pretrain")
    stage.main([])
    first = {k: Path(f).read_bytes() for k, f in S.PRETRAIN_FILES.items()}
    stage.main([])
    assert {k: Path(f).read_bytes() for k, f in S.PRETRAIN_FILES.items()} == first  # same bytes: no rerun below
    with pytest.raises(S.WeightsError, match=r"model.encoder_weights: pretrain names data/pretrain/msfan.pt, a "
                                             r"placeholder.*is 'data/checkpoints/fcn_hr18"):
        S.resolve_weights("pretrain", S.ENCODER_KEY, "tiny")
    Path(S.PRETRAIN_FILES[S.POSE_KEY]).unlink()
    with pytest.raises(FileNotFoundError, match=r"model.pose_weights: pretrain names data/pretrain/resnet18.pt.*"
                                                r"dvc repro"):
        S.resolve_weights("pretrain", S.POSE_KEY)


def test_token_is_accepted_by_check_and_validated_with_the_other_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a fresh clone: no data/pretrain yet
    S.check_weights_source("pretrain", S.ENCODER_KEY, "tiny")
    S.check_weights_source("pretrain", S.POSE_KEY)
    assert S.cached_weights_file("pretrain", S.POSE_KEY) is None
    raw = to_dict(default_params())
    raw["data"]["source"] = "kitti"
    with pytest.raises(ParamsError, match=r"model.encoder_weights and model.pose_weights: pretrain needs the "
                                          r"generated data's semantic ground truth"):
        parse_params(raw)
    raw = to_dict(default_params())
    raw["model"]["baseline_width"] = 0.5
    with pytest.raises(ParamsError, match=r"model.baseline_width \(0.5\) must equal model.pose_width \(0.25\)"):
        parse_params(raw)
    raw["model"]["pose_weights"] = None
    parse_params(raw)  # different widths are fine without the shared file


def test_resnet_loader_takes_torchvision_names_at_a_width_multiplier(tmp_path):
    """A width-0.25 file in torchvision's key names (every 64/128/256/512 width scaled) loads; another width
    is refused naming both widths."""
    tv = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    torch.manual_seed(0)
    quarter = ResNet18Encoder(3, 0.25)
    for t in quarter.state_dict().values():
        if t.is_floating_point():
            t.normal_()
    sd = quarter.state_dict()
    assert set(sd) == set(tv)
    for k, v in tv.items():   # same names, every channel count a quarter of torchvision's
        assert tuple(sd[k].shape) == tuple(n // 4 if n in (64, 128, 256, 512) else n for n in v.shape), k
    path = tmp_path / "resnet18_w025.pth"
    torch.save(sd, path)
    enc = ResNet18Encoder(3, 0.25)
    W.load_resnet18_weights(enc, path, verbose=False)
    assert all(torch.equal(v, sd[k]) for k, v in enc.state_dict().items())
    with pytest.raises(S.WeightsError, match=r"width multiplier 0.25, the pose encoder has 0.5: set "
                                             r"model.baseline_width / model.pose_width to 0.25"):
        W.load_pose_weights(build_pose_net(replace(default_params().model, pose_weights=None, pose_width=0.5)), path)


def test_tiny_hrnet_file_into_w18_names_the_size(tmp_path):
    from psdif.models.msfan import MSFAN

    path = tmp_path / "tiny.pt"
    torch.save({"meta": {}, "state_dict": MSFAN("tiny").backbone.state_dict()}, path)
    W.load_encoder_weights(MSFAN("tiny"), path, verbose=False)
    with pytest.raises(S.WeightsError, match="set model.msfan_size tiny"):
        W.load_encoder_weights(MSFAN("w18_small"), path, verbose=False)
