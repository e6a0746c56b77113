"""Your own videos through the pipeline (data.source: video): `psdif preset video`, the params checks, the depth GT
the ingest carries along (against the source depth mapped by hand), and the download / filter / export_gt stages
on clips written here (lists by clip, GT in KITTI's annotated-depth format, static frames per clip)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from psdif import cli
from psdif.camera import Camera
from psdif.config import ParamsError, load_params, parse_params, preset_path
from psdif.data import kitti
from psdif.data.kitti import FrameRef
from psdif.evaluation.metrics import load_gt_depths, load_gt_frames
from psdif.video import RECORD, depth_png, ingest_clips
from tests.project import copy_tracked
from tests.test_video import frames, write_mp4

W, H = 96, 64


def camera_yaml(path: Path, cam: Camera) -> Path:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", cam.width)
    fs.write("image_height", cam.height)
    fs.write("camera_matrix", cam.K)
    fs.write("distortion_coefficients", np.zeros((1, 5)))
    fs.release()
    return path


def depth_of(k: int, w: int = W, h: int = H) -> np.ndarray:
    """A depth map whose every pixel says where it was (metres = 1 + x / 8 + y / 64 + k / 4: each pixel unique)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return 1 + x / 8 + y / 64 + k / 4


@pytest.fixture
def clips(tmp_path):
    """Three landscape clips of 12 frames, a camera file and depth GT for each decoded frame."""
    folder, gt = tmp_path / "clips", tmp_path / "gt"
    folder.mkdir()
    for c in range(3):
        write_mp4(folder / f"clip{c}.mp4", frames(12, w=W, h=H), fps=10)
        (gt / f"clip{c}").mkdir(parents=True)
        for k in range(12):
            np.save(gt / f"clip{c}" / f"{k:010d}.npy", depth_of(k))
    cam = camera_yaml(tmp_path / "camera.yaml", Camera(80.0, 80.0, 47.5, 31.5, W, H))
    return folder, cam, gt


# ------------------------------------------------------------------------------------------ preset and params

def test_preset_video_writes_a_valid_params_file(clips, tmp_path):
    folder, cam, gt = clips
    out = tmp_path / "proj" / "params.yaml"
    out.parent.mkdir()
    assert cli.main(["preset", "video", "--videos", str(folder), "--camera", str(cam), "--gt-depth", str(gt),
                     "--test-clips", "clip2.mp4", "--fps", "5", "-o", str(out)]) == 0
    p = load_params(out)
    assert p.data.source == "video" and p.data.protocol == "eigen_benchmark"
    assert p.video.test_clips == ["clip2.mp4"] and p.video.fps == 5.0 and p.video.hfov is None
    # paths are written relative to the params file's folder, where dvc runs
    assert (out.parent / p.video.clips).resolve() == folder.resolve()
    assert (out.parent / p.video.camera).resolve() == cam.resolve()
    text = out.read_text()
    assert "# folder of clips" in text  # the preset's comments are kept
    # without GT the score is photometric; --hfov is a guess
    assert cli.main(["preset", "video", "--videos", str(folder), "--hfov", "70", "-o", str(out), "--force"]) == 0
    p = load_params(out)
    assert p.data.protocol == "photometric" and p.video.hfov == 70 and p.video.camera is None


@pytest.mark.parametrize("argv, message", [
    ([], "needs --videos"),
    (["--videos", "{folder}"], "needs the camera"),
    (["--videos", "{folder}", "--camera", "{cam}", "--hfov", "60"], "needs the camera"),
    (["--videos", "{folder}", "--camera", "{cam}", "--test-clips", "nope.mp4"], "nope.mp4"),
    (["--videos", "{folder}", "--camera", "{tmp}/missing.yaml"], "missing.yaml: camera file not found"),
    (["--videos", "{tmp}/none", "--camera", "{cam}"], "none: clips folder not found"),
])
def test_preset_video_refuses_bad_options_and_keeps_the_old_file(clips, tmp_path, capsys, argv, message):
    folder, cam, _ = clips
    out = tmp_path / "params.yaml"
    out.write_text("kept\n")
    argv = [a.format(folder=folder, cam=cam, tmp=tmp_path) for a in argv]
    assert cli.main(["preset", "video", *argv, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == "kept\n"
    assert not list(tmp_path.glob(".params.yaml.tmp"))


def test_video_options_belong_to_the_video_preset(tmp_path, capsys):
    assert cli.main(["preset", "embedded", "--hfov", "60", "-o", str(tmp_path / "p.yaml")]) == 2
    assert "--hfov is an option of `psdif preset video`" in capsys.readouterr().err


def _video_raw(**changes):
    raw = yaml.safe_load(preset_path("video").read_text())
    raw["video"].update(clips="clips", camera="camera.yaml")
    for key, value in changes.items():
        section, name = key.split(".")
        raw[section][name] = value
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"video.clips": None}, "needs video.clips"),
    ({"video.camera": None}, "needs the camera"),
    ({"video.hfov": 60.0}, "video.camera and video.hfov are both given"),
    ({"video.intrinsics": [1.0, 2.0], "video.camera": None}, "must be [fx, fy, cx, cy, width, height]"),
    ({"video.width": 320}, "give both or neither"),
    ({"video.val_fraction": 0.5, "video.test_fraction": 0.5}, "leaves no clip to train on"),
    ({"video.gt_depth": "gt"}, "set data.test_protocol: eigen_benchmark"),
    ({"data.test_protocol": "eigen"}, "set data.test_protocol: photometric"),
    ({"video.hfov": 200.0, "video.camera": None}, "video.hfov=200.0 must be < 179"),
])
def test_video_params_are_checked(changes, message):
    parse_params(_video_raw())  # the reference: valid
    with pytest.raises(ParamsError) as exc:
        parse_params(_video_raw(**changes))
    assert message in str(exc.value)


def test_the_filter_reads_the_record_the_ingest_writes():
    """stages/filter.py names the ingest's record without importing psdif.video (no code dependency)."""
    from stages.filter import RECORD as FILTER_RECORD

    assert FILTER_RECORD == RECORD


def test_photometric_protocol_is_for_videos_only():
    raw = yaml.safe_load(preset_path("embedded").read_text())
    raw["data"]["test_protocol"] = "photometric"
    with pytest.raises(ParamsError, match="photometric is for data.source: video"):
        parse_params(raw)


# ------------------------------------------------------------------------------------------ depth GT at ingest

def test_gt_depth_follows_the_frame_and_repeats_keep_their_index(tmp_path):
    """Frames 4 and 5 repeat frame 3 (dropped); the clip is written at half size with a 4:3 crop. Each written
    depth pixel must be the source depth at the source pixel the frame mapping sends it to (by hand: the crop
    offset, then the half-size nearest neighbour), at the source frame index recorded in video_ingest.json."""
    bgr = frames(10, w=W, h=H)
    bgr[4] = bgr[5] = bgr[3]
    folder, gt = tmp_path / "clips", tmp_path / "gt" / "a"
    folder.mkdir()
    gt.mkdir(parents=True)
    write_mp4(folder / "a.mp4", bgr, fps=10)
    for k in range(10):
        if k != 7:  # frame 7 has no GT: written without it, and counted
            np.save(gt / f"{k:010d}.npy", depth_of(k))
    report = ingest_clips(folder, tmp_path / "raw", Camera(80.0, 80.0, 47.5, 31.5, W, H), fps=None,
                          size=(32, 24), gt_dir=tmp_path / "gt", progress=False)
    (drive,) = report.drives
    record = json.loads((tmp_path / "raw" / drive.folder / RECORD).read_text())
    assert record["source_frames"] == [0, 1, 2, 3, 6, 7, 8, 9]
    assert any("1 of 8 written frames have no depth GT" in what for _, what in report.notes)
    x0 = (W - round(H * 32 / 24)) // 2  # the centred 4:3 crop of the 96 x 64 frame: 85 x 64 from x0 = 5
    cw = round(H * 32 / 24)
    for j, k in enumerate(record["source_frames"]):
        path = tmp_path / "raw" / drive.folder / "proj_depth" / "groundtruth" / "image_02" / f"{j:010d}.png"
        if k == 7:
            assert not path.exists()
            continue
        got = kitti.read_improved_depth(path)
        v, u = np.mgrid[0:24, 0:32]
        ok = np.zeros(got.shape, bool)
        for tie in (-1e-6, 1e-6):  # a pixel centre exactly between two source pixels may take either
            src_u = np.minimum(np.floor((u + 0.5) * cw / 32 + tie).astype(int), cw - 1) + x0
            src_v = np.minimum(np.floor((v + 0.5) * H / 24 + tie).astype(int), H - 1)
            ok |= np.abs(got - depth_png(depth_of(k)[src_v, src_u]) / 256.0) < 1e-6
        assert ok.all(), f"frame {k}: {np.argwhere(~ok)[:3]}"


def test_gt_of_another_size_is_named(tmp_path):
    folder, gt = tmp_path / "clips", tmp_path / "gt" / "a"
    folder.mkdir()
    gt.mkdir(parents=True)
    write_mp4(folder / "a.mp4", frames(5), fps=10)
    for k in range(5):
        np.save(gt / f"{k:010d}.npy", np.ones((10, 10), np.float32))
    report = ingest_clips(folder, tmp_path / "raw", Camera(80.0, 80.0, 47.5, 31.5, W, H), fps=None,
                          gt_dir=tmp_path / "gt", progress=False)
    assert not report.drives
    assert "depth GT must be at the clip's stored size" in report.skipped[0][1]
    assert not list((tmp_path / "raw").glob("video/*_sync"))  # nothing half-written


# ------------------------------------------------------------------------------------------ stages

def test_download_filter_export_gt_on_clips(clips, tmp_path, monkeypatch):
    """The stages as `dvc repro` runs them: drives and lists by clip, GT in the annotated-depth format, the
    filter's per-clip static count (a parked clip: every frame static)."""
    folder, cam, gt = clips
    still = frames(1)[0]
    write_mp4(folder / "parked.mp4", [np.clip(still.astype(int) + (i % 2), 0, 255).astype(np.uint8)
                                      for i in range(12)], fps=10)  # 1 grey level of change: not a repeat
    proj = copy_tracked(tmp_path / "proj")
    monkeypatch.chdir(proj)
    assert cli.main(["preset", "video", "--videos", str(folder), "--camera", str(cam), "--gt-depth", str(gt),
                     "--test-clips", "clip2.mp4", "--force"]) == 0
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["video"].update(duplicate_threshold=0.25, val_fraction=0.0)
    params["train"]["batch_size"] = 2
    Path("params.yaml").write_text(yaml.safe_dump(params))
    from stages import download, export_gt, filter as filter_stage

    download.main([])
    p = load_params("params.yaml")
    lists = {role: kitti.read_split(path, p.data.raw_root) for role, path in
             {"train": "data/splits/video/train_files.txt", "test": "data/splits/video/test_files.txt"}.items()}
    clip_of = {}
    for drive in Path(p.data.raw_root).glob("video/*_sync"):
        clip_of[f"video/{drive.name}"] = json.loads((drive / RECORD).read_text())["clip"]
    assert {clip_of[r.folder] for r in lists["test"]} == {"clip2.mp4"}
    assert {clip_of[r.folder] for r in lists["train"]} == {"clip0.mp4", "clip1.mp4", "parked.mp4"}
    assert len(lists["test"]) == 12 and len(lists["train"]) == 3 * 10  # train: frames with both neighbours
    manifest = json.loads(Path("data/manifests/raw_test.json").read_text())
    assert any(k.startswith("proj_depth/") for k in manifest["files"])  # the GT is hashed: edits re-evaluate
    filter_stage.main([])
    report = json.loads(Path("metrics/filter.json").read_text())
    assert report["static_by_clip"]["parked.mp4"] == 12 and report["static_by_clip"]["clip0.mp4"] == 0
    assert report["train_lines"] + report["val_lines"] == 20  # the parked clip's 10 lines dropped
    export_gt.main([])
    lines, listed = load_gt_frames("data/eval/gt_depths.npz")
    assert listed == 12 and len(lines) == 12
    gts = load_gt_depths("data/eval/gt_depths.npz")
    np.testing.assert_allclose(gts[0], depth_png(depth_of(0)) / 256.0, atol=1e-6)  # written as decoded


def test_lists_by_clip_never_overwrite_a_list_the_ingest_did_not_write(tmp_path):
    from psdif.video import LISTS_RECORD, VideoError, write_lists

    write_lists(tmp_path, {"video/train_files.txt": "a 1 l\n", "video/test_files.txt": "b 0 l\n"})
    write_lists(tmp_path, {"video/train_files.txt": "a 2 l\n", "video/test_files.txt": "b 0 l\n"})  # its own: ok
    assert (tmp_path / "video" / "train_files.txt").read_text() == "a 2 l\n"
    (tmp_path / "video" / "test_files.txt").write_text("mine 7 l\n")  # the user's edit
    with pytest.raises(VideoError, match="test_files.txt: a split list the video ingest did not write"):
        write_lists(tmp_path, {"video/train_files.txt": "a 3 l\n", "video/test_files.txt": "b 0 l\n"})
    assert (tmp_path / "video" / "test_files.txt").read_text() == "mine 7 l\n"
    assert (tmp_path / "video" / "train_files.txt").read_text() == "a 2 l\n"  # nothing written before the refusal
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "train_files.txt").write_text("x 1 l\n")  # a list folder of the user's, never recorded
    with pytest.raises(VideoError, match="own/train_files.txt"):
        write_lists(tmp_path, {"own/train_files.txt": "a 1 l\n"})
    assert json.loads((tmp_path / LISTS_RECORD).read_text()).keys() == {"video/train_files.txt",
                                                                       "video/test_files.txt"}
