"""KITTI's improved ground truth (Uhrig et al. 2017, Monodepth2's eigen_benchmark split): reading the annotated
PNGs, the eigen_benchmark protocol against an independent transcription of Monodepth2's evaluation, where it
differs from the Eigen protocol, coverage of a user list, and the export_gt / download stages on the real
KITTI sample (drive 0001 with the annotated depth of frames 5 and 25)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from torch import nn

from psdif.data import kitti
from psdif.data.ondisk import NO_ANNOTATION, evaluable_test_frames
from psdif.reports import read_report
from psdif.evaluation.metrics import PROTOCOLS, evaluate_depth, load_gt_depths, load_gt_frames, load_gt_protocol
from tests.kitti_copy import DRIVE, ArchiveServer, paper_params, run_stage, write_lists

ANNOTATED = "depth_groundtruth"  # below the sample: <drive>/proj_depth/groundtruth/image_02/%010d.png
FRAMES = (5, 25)                 # the sample's annotated frames
DRIVE_NAME = DRIVE.split("/")[-1]


def _png(kitti_mini: Path, frame: int) -> Path:
    return (kitti_mini / ANNOTATED / DRIVE_NAME / "proj_depth" / "groundtruth" / "image_02" / f"{frame:010d}.png")


def _sigmoid(seed: int = 0) -> np.ndarray:
    """A network-size (192 x 640) sigmoid disparity: larger towards the bottom rows (nearer), plus noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.02, 0.4, 192)[:, None] * np.ones((1, 640))
    return np.clip(rows + rng.normal(0, 0.02, rows.shape), 1e-3, 1).astype(np.float32)


def _reference_benchmark(sigmoid: np.ndarray, gt: np.ndarray, min_depth=0.1, max_depth=100.0) -> dict:
    """Monodepth2's evaluate_depth.py for eval_split eigen_benchmark, transcribed: disp_to_depth's scaled
    disparity, cv2.resize (bilinear) to the GT size, depth = 1/disp, mask gt > 0 (no crop, no GT cap),
    median scaling, prediction clamped to [1e-3, 80], then compute_errors."""
    h, w = gt.shape
    scaled = (1 / max_depth + (1 / min_depth - 1 / max_depth) * sigmoid.astype(np.float64)).astype(np.float32)
    pred = 1.0 / cv2.resize(scaled, (w, h)).astype(np.float64)
    mask = gt > 0
    g, p = gt[mask].astype(np.float64), pred[mask]
    ratio = np.median(g) / np.median(p)
    p = p * ratio
    p[p < 1e-3] = 1e-3
    p[p > 80] = 80
    thresh = np.maximum(g / p, p / g)
    return {"abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
            "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
            "a1": np.mean(thresh < 1.25), "a2": np.mean(thresh < 1.25 ** 2), "a3": np.mean(thresh < 1.25 ** 3),
            "ratio": ratio}


# ------------------------------------------------------------------------------------------ reading

@pytest.mark.parametrize("frame", FRAMES)
def test_read_improved_depth_is_the_uint16_png_over_256(kitti_mini, frame):
    path = _png(kitti_mini, frame)
    depth = kitti.read_improved_depth(path)
    raw_cv = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    with Image.open(path) as im:
        raw_pil = np.array(im)
    assert raw_cv.dtype == np.uint16 and np.array_equal(raw_cv, raw_pil.astype(np.uint16))
    assert depth.dtype == np.float32 and depth.shape == (375, 1242)
    np.testing.assert_array_equal(depth, raw_cv.astype(np.float32) / 256)
    assert np.array_equal(depth == 0, raw_cv == 0) and 80_000 < (depth > 0).sum() < 100_000
    assert 80 < depth.max() < 90                 # annotated depth reaches past the Eigen protocol's 80 m cap


def test_read_improved_depth_refuses_what_is_not_16_bit_greyscale(tmp_path):
    eight = tmp_path / "eight.png"
    Image.fromarray(np.full((4, 6), 200, np.uint8)).save(eight)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(rgb)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 60), 2560, np.uint16)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    for path, words in ((eight, "8-bit PNG"), (rgb, "8-bit PNG"), (text, "not a PNG"), (cut, "truncated"),
                        (tmp_path / "absent.png", "not found")):
        with pytest.raises(kitti.KittiError) as exc:
            kitti.read_improved_depth(path)
        assert str(path) in str(exc.value) and words in str(exc.value), exc.value
    np.testing.assert_array_equal(kitti.read_improved_depth(good), np.full((40, 60), 10.0, np.float32))


def test_annotation_is_found_in_place_or_in_either_layout_of_the_archive(tmp_path):
    ref = kitti.FrameRef(DRIVE, 7, "l")
    rel = Path(DRIVE_NAME, "proj_depth", "groundtruth", "image_02", "0000000007.png")
    raw, ann = tmp_path / "raw", tmp_path / "annotated"
    assert kitti.improved_depth_path(raw, None, ref) is None
    for where in (raw / "2011_09_26" / rel, ann / rel, ann / "train" / rel, ann / "val" / rel):
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(b"x")
        root = None if where.is_relative_to(raw) else ann
        assert kitti.improved_depth_path(raw, root, ref) == where
        where.unlink()
    assert kitti.improved_depth_path(raw, ann, ref) is None
    right = kitti.improved_depth_candidates(raw, None, kitti.FrameRef(DRIVE, 7, "r"))[0]
    assert right.parts[-2] == "image_03"


# ------------------------------------------------------------------------------------------ protocol

@pytest.mark.parametrize("frame", FRAMES)
def test_eigen_benchmark_equals_an_independent_transcription_of_monodepth2(kitti_mini, frame):
    gt = cv2.imread(str(_png(kitti_mini, frame)), cv2.IMREAD_UNCHANGED).astype(np.float32) / 256
    sigmoid = _sigmoid(frame)
    ours = evaluate_depth(sigmoid, gt, protocol="eigen_benchmark")
    ref = _reference_benchmark(sigmoid, gt)
    assert set(ours) == set(ref)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    eigen = evaluate_depth(sigmoid, gt)               # the default protocol on the same map: other pixels
    assert eigen["abs_rel"] != pytest.approx(ours["abs_rel"], rel=1e-3)


def test_protocols_differ_by_crop_and_gt_cap_by_hand():
    """GT 10 m over the Eigen crop, one pixel of 90 m inside it and one of 5 m above the crop; a constant
    prediction. Eigen: only the 10 m pixels (90 > 80 is masked, row 0 is outside the crop), scaled to 10 m:
    no error. eigen_benchmark: every annotated pixel; median 10 m, so the prediction is 10 m everywhere."""
    gt = np.zeros((375, 1242), np.float32)
    gt[153:371, 44:1197] = 10.0                        # the crop of a 375 x 1242 image (test_metrics)
    gt[200, 600] = 90.0
    gt[0, 0] = 5.0
    n = int((gt > 0).sum())
    flat = np.full((192, 640), 0.3, np.float32)
    eigen = evaluate_depth(flat, gt)
    assert eigen["abs_rel"] == pytest.approx(0, abs=1e-7) and eigen["a1"] == 1.0
    bench = evaluate_depth(flat, gt, protocol="eigen_benchmark")
    assert bench["abs_rel"] == pytest.approx((80 / 90 + 5 / 5) / n, rel=1e-6)
    assert bench["rmse"] == pytest.approx(np.sqrt((80 ** 2 + 5 ** 2) / n), rel=1e-6)
    assert bench["a1"] == pytest.approx((n - 2) / n)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'garg'"):
        evaluate_depth(flat, gt, protocol="garg")
    assert PROTOCOLS == ("eigen", "eigen_benchmark")


def test_benchmark_prediction_is_clamped_but_gt_is_not():
    """A pixel of 200 m GT stays in the mask (no GT cap), the prediction there is clamped to 80 m."""
    gt = np.full((4, 8), 10.0, np.float32)
    gt[0, 0] = 200.0
    sig = np.full((4, 8), 0.1, np.float32)            # constant: ratio = median(gt) / pred = 10 / pred
    e = evaluate_depth(sig, gt, protocol="eigen_benchmark")
    assert e["abs_rel"] == pytest.approx((190 / 200) / 32, rel=1e-6)   # pred 10 m there (not 200, not 80)
    sig = sig.copy()
    sig[0, 0] = 1e-4                                  # far: 1 / (0.01 + 9.99e-4) m before scaling
    e = evaluate_depth(sig, gt, protocol="eigen_benchmark")
    far = 1 / (0.01 + 9.99 * 1e-4) * (10 / (1 / (0.01 + 9.99 * 0.1)))
    assert far > 80 and e["abs_rel"] == pytest.approx((120 / 200) / 32, rel=1e-4)


# ------------------------------------------------------------------------------------------ coverage, stages

def test_coverage_of_a_user_list_counts_the_frames_without_annotation(kitti_mini, tmp_path):
    root = kitti_mini
    frames = [kitti.FrameRef(DRIVE, f, "l") for f in (5, 4, 25)]
    test_list = tmp_path / "test_files.txt"
    kitti.write_split(test_list, frames)
    ev = evaluable_test_frames(root, test_list, "png", "eigen_benchmark", root / ANNOTATED)
    assert [f.frame for f in ev.used] == [5, 25] and ev.missing == [(frames[1], NO_ANNOTATION)]
    report = ev.report()
    assert report["protocol"] == "eigen_benchmark"
    assert (report["listed"], report["used"], report["missing"]) == (3, 2, 1)
    assert report["missing_by_reason"] == {NO_ANNOTATION: 1}
    eigen = evaluable_test_frames(root, test_list, "png")  # frame 4 has its scan: the Eigen protocol takes it
    assert len(eigen.used) == 3 and eigen.report()["protocol"] == "eigen"
    none = evaluable_test_frames(root, test_list, "png", "eigen_benchmark", None)  # nothing in place
    assert not none.used and "annotated depth PNG" in none.problem()


def _project(tmp_path: Path, raw: Path, **download) -> Path:
    project = tmp_path / "project"
    project.mkdir(parents=True)
    data = {"raw_root": str(raw), "splits_dir": "my_splits", "train_split": "mine", "test_split": "mine",
            "num_workers": 0, "test_protocol": "eigen_benchmark",
            "depth_annotated_root": download.pop("annotated")}
    params = paper_params(data=data, download=download, eval={"make3d_root": None})  # no Make3D fetch
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_lists(project / "my_splits" / "mine", train=[f"{DRIVE} {i} l" for i in (1, 2, 3)],
                test=[f"{DRIVE} 5 l", f"{DRIVE} 4 l", f"{DRIVE} 25 l"])
    return project


def test_export_gt_and_evaluation_on_the_annotated_depth(kitti_mini, copy, tmp_path):
    """download -> export_gt with eigen_benchmark on a user list (frames 5, 4, 25; 4 has no annotation):
    the GT file holds the two annotated maps as read by PIL, says its protocol, the report counts frame 4;
    the evaluation of those frames (psdif.evaluation.evaluate) equals the transcription per frame."""
    project = _project(tmp_path, copy, annotated=str(kitti_mini / ANNOTATED))
    run_stage("download", project)
    run_stage("export_gt", project)
    report = read_report(project / "metrics/export_gt.json")  # the numbers and, beside them, the labels
    assert report["protocol"] == "eigen_benchmark" and report["test_split"] == "mine"
    assert (report["listed"], report["used"], report["missing"]) == (3, 2, 1)
    assert report["first_missing"] == [f"{DRIVE} 4 l ({NO_ANNOTATION})"]
    gt_file = project / "data/eval/gt_depths.npz"
    assert load_gt_frames(gt_file) == ([f"{DRIVE} 5 l", f"{DRIVE} 25 l"], 3)
    assert load_gt_protocol(gt_file) == "eigen_benchmark"
    gts = load_gt_depths(gt_file)
    for frame, gt in zip(FRAMES, gts):
        with Image.open(_png(kitti_mini, frame)) as im:
            np.testing.assert_array_equal(gt, np.array(im).astype(np.float32) / 256)
    raw_test = json.loads((project / "data/manifests/raw_test.json").read_text())["files"]
    assert {f"proj_depth/{DRIVE}/image_02/{f:010d}.png" for f in FRAMES} <= set(raw_test)

    from types import SimpleNamespace

    from psdif.evaluation.evaluate import evaluate_eigen

    class Net(nn.Module):
        """Sigmoid = 0.05 + 0.5 x the mean colour: a prediction that depends on the image."""

        def forward_depth(self, x):
            return 0.05 + 0.5 * x.mean(1, keepdim=True)

    frames = [kitti.parse_split_line(line) for line in load_gt_frames(gt_file)[0]]
    cfg = SimpleNamespace(batch_size=2, post_process=False, min_depth=1e-3, max_depth=80.0)
    summary, per_image, sigmoids = evaluate_eigen(Net(), copy, frames, gts, 192, 640, "png", cfg, (0.1, 100.0),
                                                  protocol="eigen_benchmark")
    assert summary["n_images"] == 2
    for got, sig, gt in zip(per_image, sigmoids, gts):
        ref = _reference_benchmark(sig, gt)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert summary["abs_rel"] == pytest.approx(np.mean([r["abs_rel"] for r in per_image]))


def _annotated_zip(kitti_mini: Path) -> bytes:
    """data_depth_annotated.zip's layout: train/<drive>/proj_depth/groundtruth/image_02/*.png."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for frame in FRAMES:
            zf.write(_png(kitti_mini, frame), f"train/{_png(kitti_mini, frame).relative_to(kitti_mini / ANNOTATED)}")
    return buf.getvalue()


def test_download_fetches_the_annotated_depth_once_when_asked(kitti_mini, copy, tmp_path):
    """download.depth_annotated with fetch: missing: the archive (served locally) is fetched once into
    data.depth_annotated_root and read from its train/ folder; never without the param."""
    annotated = tmp_path / "annotated"
    with ArchiveServer({"/raw_data/data_depth_annotated.zip": _annotated_zip(kitti_mini)}) as server:
        url = f"{server.url}/data_depth_annotated.zip"
        off = _project(tmp_path / "off", copy, annotated=str(annotated), fetch="missing", depth_annotated=False,
                       depth_annotated_url=url)
        run_stage("download", off, loopback=True)
        assert not annotated.exists() and server.requests == []
        project = _project(tmp_path, copy, annotated=str(annotated), fetch="missing", depth_annotated=True,
                           depth_annotated_url=url)
        run_stage("download", project, loopback=True)
        run_stage("download", project, loopback=True)
        assert server.requests == [("/raw_data/data_depth_annotated.zip", 0)]
    for frame in FRAMES:
        got = annotated / "train" / _png(kitti_mini, frame).relative_to(kitti_mini / ANNOTATED)
        assert got.read_bytes() == _png(kitti_mini, frame).read_bytes()
    assert not (project / "data/downloads/data_depth_annotated.zip").exists()
    run_stage("export_gt", project)
    assert json.loads((project / "metrics/export_gt.json").read_text())["used"] == 2


def test_evaluate_refuses_gt_of_the_other_protocol(copy, tmp_path):
    """GT exported for the Eigen protocol, params now asking for eigen_benchmark (export_gt not re-run): the
    evaluate stage stops naming both and the fix, before predicting anything."""
    from psdif.evaluation.metrics import save_gt_depths

    project = _project(tmp_path, copy, annotated=None)
    save_gt_depths(project / "data/eval/gt_depths.npz", [np.ones((2, 3), np.float32)], [f"{DRIVE} 5 l"], 1, "eigen")
    r = run_stage("evaluate", project, "--reference", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "holds the eigen GT but data.test_protocol gives eigen_benchmark" in r.stderr
    assert "dvc repro export_gt" in r.stderr
