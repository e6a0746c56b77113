"""bench/video.py (issue 21's acceptance benchmark): the clips exported from a tiny generated world checked against
the generator's own files and its documented rig, the errors against hand computations, the runner's frame
mapping, params alignment and report against small fakes. The full runner (two dvc repro) is not run here."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from psdif.camera import read_camera
from psdif.config import default_params
from psdif.data.kitti import FrameRef

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_width=128, image_height=64, train_drives=1, val_drives=1, test_drives=1, frames_per_drive=8,
            test_frames_per_drive=2, supersample=1, make3d_images=0)
DRIVES = [f"2030_01_01_drive_{i:04d}_sync" for i in (1, 2, 3)]  # train, val, test (the generator's order)


def _module():
    spec = importlib.util.spec_from_file_location("bench_video", REPO / "bench" / "video.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_video"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bv = _module()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(raw_root, out, Export) of a generated world of three 8-frame drives at 128 x 64."""
    from psdif.data.synthetic import generate_mini_kitti

    root = tmp_path_factory.mktemp("world")
    cfg = dataclasses.replace(default_params().synthetic, **TINY)
    generate_mini_kitti(cfg, root / "kitti_raw", root / "splits", progress=False)
    export = bv.export_clips(root / "kitti_raw", root / "splits", root / "export", fps=10)
    return root / "kitti_raw", root / "export", export


def _decode(path: Path) -> list[np.ndarray]:
    cap, out = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        out.append(got[1][:, :, ::-1].astype(np.float64))
    cap.release()
    return out


# ------------------------------------------------------------------------------------------ 1. the clips

def test_export_writes_clips_camera_and_depth_only(exported):
    raw, out, export = exported
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted(["camera.yaml"] + [f"clips/{d}.mp4" for d in DRIVES]
                      + [f"gt_depth/{d}/{k:010d}.npy" for d in DRIVES for k in range(8)])
    assert files == expected  # no OXTS, velodyne, labels, second camera or leftover temporary file
    assert export.test_clips == [f"{DRIVES[2]}.mp4"] and export.clips == {f"{d}.mp4": 8 for d in DRIVES}


def test_clip_frames_are_the_drive_frames_in_order(exported):
    raw, out, export = exported
    for d in DRIVES:
        decoded = _decode(out / "clips" / f"{d}.mp4")
        pngs = [cv2.imread(str(raw / "2030_01_01" / d / "image_02" / "data" / f"{k:010d}.png"))[:, :, ::-1]
                for k in range(8)]
        assert len(decoded) == 8 and decoded[0].shape == (64, 128, 3)
        for k in range(8):
            own = np.abs(decoded[k] - pngs[k]).mean()
            others = [np.abs(decoded[k] - pngs[j]).mean() for j in range(8) if (pngs[j] != pngs[k]).any()]
            assert own < 6 and own < min(others), (d, k, own, others)  # codec noise only, and the right frame
        assert len({p.tobytes() for p in pngs}) < 8  # the stop at the crosswalk: repeated frames stay in the clip
    assert 0 < export.codec_mae < 6


def test_camera_yaml_holds_the_generated_rig(exported):
    """The generator's documented intrinsics: fx = 0.58 W, fy = 1.92 H, cx = W/2, cy = H/2 (W x H = 128 x 64),
    as P_rect_02 of its calib file says too; read back by psdif.camera from an OpenCV FileStorage YAML."""
    raw, out, export = exported
    text = (out / "camera.yaml").read_text()
    assert text.startswith("%YAML") and "!!opencv-matrix" in text  # %YAML:1.0 (OpenCV 4) or %YAML 1.2 (5)
    calib = dict(line.split(":", 1) for line in (raw / "2030_01_01" / "calib_cam_to_cam.txt").read_text().splitlines())
    P = np.array(calib["P_rect_02"].split(), dtype=float).reshape(3, 4)
    cam = read_camera(out / "camera.yaml")
    np.testing.assert_allclose(cam.K, [[0.58 * 128, 0, 64], [0, 1.92 * 64, 32], [0, 0, 1]], rtol=1e-9)
    np.testing.assert_allclose(cam.K, P[:, :3], rtol=0, atol=1e-9)
    assert (cam.width, cam.height) == (128, 64) and not any(cam.distortion or ())
    assert export.camera.K.tolist() == cam.K.tolist()


def test_gt_depth_is_the_generators_dense_depth(exported):
    raw, out, _ = exported
    for d in DRIVES:
        for k in (0, 7):
            png = cv2.imread(str(raw / "synthetic_gt" / d / "depth_02" / f"{k:010d}.png"), cv2.IMREAD_UNCHANGED)
            depth = np.load(out / "gt_depth" / d / f"{k:010d}.npy")
            assert png.dtype == np.uint16 and depth.dtype == np.float32
            np.testing.assert_array_equal(depth, png.astype(np.float32) / 256)
            assert (depth == 0).any() and depth.max() > 10  # sky and far street: a real depth map


# ------------------------------------------------------------------------------------------ 2. the errors

def _sigmoid(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The sigmoid whose disparity 1/hi + (1/lo - 1/hi) s is 1 / depth."""
    return ((1 / depth - 1 / hi) / (1 / lo - 1 / hi)).astype(np.float32)


def _case():
    """GT 10 m on 18 evaluated pixels (plus sky 0 and 90 m beyond eval max 80: not evaluated); the prediction
    10 m on 10 of them, 20 m on 8, and 20 m on the two excluded ones (counting them would move the median)."""
    gt = np.full((4, 5), 10.0)
    gt[0, 0], gt[0, 1] = 0.0, 90.0
    pred = np.full((4, 5), 20.0)
    pred.ravel()[2:12] = 10.0
    return gt, pred


def test_errors_by_hand():
    gt, pred = _case()
    # median pred = 10: ratio 1; abs_rel = 8 x |10 - 20| / 10 / 18; a1 = 10 / 18; rmse = sqrt(8 x 100 / 18)
    e = bv.sigmoid_errors([_sigmoid(pred, 0.1, 100)], [gt], (0.1, 100.0), (1e-3, 80.0))
    assert e["abs_rel"] == pytest.approx(8 / 18, rel=1e-5) and e["a1"] == pytest.approx(10 / 18)
    assert e["rmse"] == pytest.approx(math.sqrt(800 / 18), rel=1e-5) and e["n_frames"] == 1
    # median scaling: the same prediction three times farther gives the same errors
    e3 = bv.sigmoid_errors([_sigmoid(3 * pred, 0.1, 100)], [gt], (0.1, 100.0), (1e-3, 80.0))
    assert e3["abs_rel"] == pytest.approx(8 / 18, rel=1e-5)
    # clamping to eval max: 100 m predictions (range 0.1-1000) count as 80 m: abs_rel = 8 x 70 / 10 / 18
    far = np.where(pred == 20, 100.0, pred)
    e = bv.sigmoid_errors([_sigmoid(far, 0.1, 1000)], [gt], (0.1, 1000.0), (1e-3, 80.0))
    assert e["abs_rel"] == pytest.approx(8 * 7 / 18, rel=1e-5)
    # the mean over frames, not over pooled pixels: a perfect second frame halves it
    two = bv.sigmoid_errors([_sigmoid(pred, 0.1, 100), _sigmoid(2 * gt.clip(1), 0.1, 100)], [gt, gt],
                            (0.1, 100.0), (1e-3, 80.0))
    assert two["abs_rel"] == pytest.approx(4 / 18, rel=1e-5) and two["n_frames"] == 2


def test_constant_prediction_by_hand():
    # GT 1, 2, 4, 8: median 3, constant 3 m: abs_rel = (2/1 + 1/2 + 1/4 + 5/8) / 4; every ratio >= 4/3 > 1.25
    e = bv.constant_errors([np.array([[1.0, 2.0], [4.0, 8.0]])], eval_range=(1e-3, 80.0))
    assert e["abs_rel"] == pytest.approx((2 + 0.5 + 0.25 + 0.625) / 4) and e["a1"] == 0.0


def test_depth_errors_of_a_model_file(tmp_path):
    """A model.pt in train.py's format: its training size (64 x 128) and depth range (0.5-30 m) are used, as the
    evaluate stage uses them; reference: the net's own forward pass on the frames resized by hand."""
    from psdif.data.images import resize_image
    from psdif.models import build_depth_net, dataclass_replace_weights
    from psdif.variants import get_variant

    cfg = dataclasses.replace(dataclass_replace_weights(default_params().model), min_depth=0.5, max_depth=30.0)
    variant = get_variant("baseline")
    torch.manual_seed(0)
    net = build_depth_net(variant, cfg).eval()
    with torch.no_grad():
        net.decoder.disp_heads[0].conv.weight.mul_(100)  # sigmoids spread over (0, 1), not all near 0.5
        net.decoder.disp_heads[0].conv.bias.zero_()
    path = tmp_path / "model.pt"
    torch.save({"depth": net.state_dict(), "pose": {}, "variant": dataclasses.asdict(variant),
                "model_cfg": dataclasses.asdict(cfg), "height": 64, "width": 128, "step": 1}, path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (50, 90, 3), dtype=np.uint8) for _ in range(3)]
    gts = [rng.uniform(2, 60, (50, 90)) for _ in range(3)]
    got = bv.depth_errors(path, frames, gts, eval_range=(1e-3, 80.0))
    with torch.no_grad():
        x = torch.from_numpy(np.stack([resize_image(f, 64, 128) for f in frames])).permute(0, 3, 1, 2).float() / 255
        sig = net.forward_depth(x)[:, 0].numpy()
    assert sig.std() > 0.05
    want = bv.sigmoid_errors(list(sig), gts, (0.5, 30.0), (1e-3, 80.0))
    assert got == pytest.approx(want, rel=1e-5)
    assert bv.sigmoid_errors(list(sig), gts, (0.1, 100.0), (1e-3, 80.0))["abs_rel"] != pytest.approx(got["abs_rel"])


# ------------------------------------------------------------------------------------------ 3. the runner

def test_video_frames_map_back_through_the_ingest_records(tmp_path):
    """A clip cut in two drives with repeated frames dropped: source_frames says which decoded frame each is."""
    for n, source in ((1, [0, 1, 2, 5, 6]), (2, [7, 8, 9])):
        folder = tmp_path / "video" / f"video_drive_{n:04d}_sync"
        folder.mkdir(parents=True)
        (folder / "video_ingest.json").write_text(json.dumps({"clip": "2030_01_01_drive_0003_sync.mp4",
                                                              "source_frames": source}))
    drives = {"2030_01_01_drive_0003_sync": "2030_01_01/2030_01_01_drive_0003_sync"}
    refs = [FrameRef("video/video_drive_0001_sync", 3, "l"), FrameRef("video/video_drive_0002_sync", 0, "l"),
            FrameRef("video/video_drive_0001_sync", 0, "l")]
    got = bv.video_to_generated(tmp_path, refs, drives)
    assert got == [FrameRef(drives["2030_01_01_drive_0003_sync"], k, "l") for k in (5, 7, 0)]
    with pytest.raises(SystemExit, match="frame 5 of video/video_drive_0001_sync, but 5 source_frames"):
        bv.video_to_generated(tmp_path, [FrameRef("video/video_drive_0001_sync", 5, "l")], drives)
    with pytest.raises(SystemExit, match="is no exported drive"):
        bv.video_to_generated(tmp_path, refs[:1], {})


def test_align_params_trains_as_the_reference(tmp_path):
    preset = {"data": {"source": "video", "height": 64, "width": 160, "intrinsics": "calib", "img_ext": "png"},
              "model": {"encoder_weights": None, "pose_weights": None, "min_depth": 0.01},
              "loss": {"alpha": 0.85}, "train": {"max_steps": 500}, "eval": {"max_depth": 80.0},
              "boundary": {"z": 5}, "prepare": {"enabled": True}, "video": {"fps": 10.0}}
    ref = json.loads(json.dumps(preset))
    ref["data"].update(source="synthetic", height=96)
    ref["model"].update(encoder_weights="pretrain", pose_weights="pretrain")
    ref["train"]["max_steps"] = 300
    del ref["video"]
    changed = bv.align_params(preset, ref, tmp_path)
    assert changed == {"data.height": {"preset": 64, "now": 96}, "train.max_steps": {"preset": 500, "now": 300},
                       "model.encoder_weights": {"preset": None, "now": str(tmp_path / "msfan.pt")},
                       "model.pose_weights": {"preset": None, "now": str(tmp_path / "resnet18.pt")}}
    assert preset["data"]["source"] == "video" and preset["video"] == {"fps": 10.0}  # the data stays the video's
    assert ref["model"]["encoder_weights"] == "pretrain"  # the reference is left as it was


def _errors(abs_rel: float) -> dict:
    return {"abs_rel": abs_rel, "a1": 0.8, "rmse": 5.0, "train_minutes": 2.0}


def _result(camera: tuple[float, float], kitti: tuple[float, float]) -> dict:
    paths = {"kitti": kitti, "camera": camera, "hfov": (0.33, 0.36)}
    result = {"paths": {p: {r: _errors(v) for r, v in zip(("baseline", "full"), vals)} for p, vals in paths.items()},
              "constant": {"abs_rel": 0.5, "a1": 0.3}, "frames": {"common": 70}, "seed": 0, "true_hfov": 81.5,
              "machine": "a test", "times": {"export_s": 30, "camera": {"preset_s": 2, "repro_s": 1200, "repro_targets": "all"},
                                             "hfov": {"preset_s": 2, "repro_s": 1260,
                                                      "repro_targets": ["evaluate_baseline", "evaluate_full"]}}}
    result["criteria"] = bv.criteria(result)
    return result


def test_criteria_at_their_thresholds():
    # baseline: 0.29 / 0.5 = 0.58 <= 0.6, 0.29 / 0.25 = 1.16; full: 0.31 / 0.5 = 0.62 > 0.6, 0.31 / 0.24 = 1.29
    verdict = {(c["row"], "KITTI" in c["criterion"]): c["pass"]
               for c in _result((0.29, 0.31), (0.25, 0.24))["criteria"]}
    assert verdict == {("baseline", False): True, ("baseline", True): True, ("full", False): False,
                       ("full", True): False}
    # within 25% both ways: 0.18 / 0.25 = 0.72 is 28% better than the KITTI path, outside the tolerance
    verdict = {(c["row"], "KITTI" in c["criterion"]): c["pass"]
               for c in _result((0.18, 0.2), (0.25, 0.2))["criteria"]}
    assert verdict == {("baseline", False): True, ("baseline", True): False, ("full", False): True,
                       ("full", True): True}


def test_table_side_by_side():
    text = bv.table(_result((0.29, 0.31), (0.25, 0.24)), 70.0)
    lines = text.splitlines()
    assert lines[0] == ("| row | KITTI path (data.source: synthetic) | video + camera file "
                        "| video + --hfov 70 (guessed) | camera: ÷ constant | hfov: ÷ constant "
                        "| camera: ÷ KITTI path | hfov: ÷ KITTI path |")
    assert lines[2] == ("| baseline | 0.2500 (a1 0.800) | 0.2900 (a1 0.800) | 0.3300 (a1 0.800) | 0.58 | 0.66 | 1.16 "
                        "| 1.32 |")
    assert lines[4].startswith("| constant | 0.5000 (a1 0.300) | 0.5000 (a1 0.300) | 0.5000 (a1 0.300) | 1.00 | 1.00")
    assert "- full: abs_rel <= 0.6 x constant: 0.620 × constant → FAIL" in lines
    assert "- baseline: |abs_rel / KITTI path - 1| <= 0.25: +0.160 → pass" in lines
    assert "- overall: FAIL" in lines
    # the cost of the guessed field of view against the camera file: 0.33 / 0.29 - 1, 0.36 / 0.31 - 1
    assert "costs, in abs_rel against the camera file: baseline +13.8%, full +16.1%." in text
    assert "dvc repro (the whole pipeline, every Table-3 row) 20.0 min" in text
    assert "dvc repro evaluate_baseline evaluate_full 21.0 min" in text and "Machine: a test." in text


def _model_file(path: Path, variant_name: str) -> None:
    """A tiny untrained model.pt in train.py's format at 64 x 128 (the baseline's scale-0 head sharpened: varied
    sigmoids)."""
    from psdif.models import build_depth_net, dataclass_replace_weights
    from psdif.variants import get_variant

    cfg, variant = dataclass_replace_weights(default_params().model), get_variant(variant_name)
    torch.manual_seed(1)
    net = build_depth_net(variant, cfg).eval()
    if variant_name == "baseline":
        with torch.no_grad():
            net.decoder.disp_heads[0].conv.weight.mul_(100)
            net.decoder.disp_heads[0].conv.bias.zero_()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"depth": net.state_dict(), "pose": {}, "variant": dataclasses.asdict(variant),
                "model_cfg": dataclasses.asdict(cfg), "height": 64, "width": 128, "step": 1}, path)


def test_measure_on_the_shared_frames(exported, tmp_path):
    """A fake video run of the tiny world's test drive: its frames copied with the stop's repeats dropped (as the
    ingest drops them: generated frame 6 is video frame 4) and test frame 1 left out; the same model files as the
    KITTI path. The shared frames are the KITTI test frames the video lists (frame 6 only), and the same images
    through the same models give the KITTI path's numbers exactly."""
    import shutil

    raw, _, _ = exported
    reference, video = raw.parent, tmp_path / "video_repo"
    params = {"data": {"raw_root": "kitti_raw", "splits_dir": "splits", "test_split": "synth_eigen", "img_ext": "png"},
              "eval": {"min_depth": 1e-3, "max_depth": 80.0, "batch_size": 4}, "train": {"seeds": [0]}}
    for row in bv.ROWS:
        _model_file(reference / "models" / row / "seed0" / "model.pt", row)
        shutil.copytree(reference / "models" / row, video / "models" / row)
    stop = [int(k) for k in (raw / "synthetic_gt" / DRIVES[2] / "stationary.txt").read_text().split()]
    kept = [k for k in range(8) if k not in stop[1:]]
    drive = video / "data" / "video_raw" / "video" / "video_drive_0001_sync"
    for i, k in enumerate(kept):
        (drive / "image_02" / "data").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw / "2030_01_01" / DRIVES[2] / "image_02" / "data" / f"{k:010d}.png",
                        drive / "image_02" / "data" / f"{i:010d}.png")
    (drive / "video_ingest.json").write_text(json.dumps({"clip": f"{DRIVES[2]}.mp4", "source_frames": kept}))
    (video / "data" / "splits" / "video").mkdir(parents=True)
    (video / "data" / "splits" / "video" / "test_files.txt").write_text(
        "".join(f"video/video_drive_0001_sync {i} l\n" for i, k in enumerate(kept) if k != 1))
    setting = {"repo": str(video), "params": {"data": {"raw_root": "data/video_raw", "splits_dir": "data/splits",
                                                       "test_split": "video"}}}
    kitti_test = (reference / "splits" / "synth_eigen" / "test_files.txt").read_text()
    assert kitti_test == f"2030_01_01/{DRIVES[2]} 1 l\n2030_01_01/{DRIVES[2]} 6 l\n" and stop == [2, 3, 4]
    result = bv.measure(reference, params, {"camera": setting})
    assert result["frames"] == {"kitti_test": 2, "camera_test": len(kept) - 1, "common": 1}
    gt = cv2.imread(str(raw / "synthetic_gt" / DRIVES[2] / "depth_02" / f"{6:010d}.png"), cv2.IMREAD_UNCHANGED) / 256
    assert result["constant"]["abs_rel"] == pytest.approx(bv.constant_errors([gt], eval_range=(1e-3, 80))["abs_rel"])
    for row in bv.ROWS:
        assert result["paths"]["camera"][row] == result["paths"]["kitti"][row]
        assert result["paths"]["kitti"][row]["n_frames"] == 1
    assert result["paths"]["kitti"]["baseline"]["abs_rel"] != result["paths"]["kitti"]["full"]["abs_rel"]
