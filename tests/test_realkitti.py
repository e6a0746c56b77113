"""Real KITTI without hand edits: a user's local or partial copy (the kitti-mini sample, read-only), custom
split lists, no network unless asked, the download path against a local server (killed mid-archive), and
what the stages report about the frames they did not find. The stages run as the pipeline runs them (one
process each, in a project folder), with every network connection refused and logged."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.kitti_copy import (DRIVE, REPO, ArchiveServer, env, kitti_archives, make_writable, paper_params,
                              run_stage, snapshot, write_lists)

TRAIN = [f"{DRIVE} {i} l" for i in (1, 2, 3)] + [f"{DRIVE} 2 r"]
VAL = [f"{DRIVE} 4 l"]
TEST = [f"{DRIVE} 5 l", f"{DRIVE} 25 l"]


def _project(tmp_path: Path, raw_root: Path, splits_dir="my_splits", train_split="mine", test_split="mine",
             **sections) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    data = {"raw_root": str(raw_root), "splits_dir": splits_dir, "train_split": train_split,
            "test_split": test_split, "num_workers": 0, **sections.pop("data", {})}
    (project / "params.yaml").write_text(yaml.safe_dump(paper_params(data=data, **sections), sort_keys=False))
    return project


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_stage", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ offline, local

def test_local_copy_is_used_offline_and_never_written(copy, tmp_path):
    project = _project(tmp_path, copy)
    write_lists(project / "my_splits" / "mine", train=TRAIN, val=VAL, test=TEST)
    net_log, before = tmp_path / "net.log", snapshot(copy)
    r = run_stage("download", project, net_log=net_log)
    manifest = json.loads((project / "data/manifests/raw.json").read_text())
    assert manifest["source"] == "kitti" and manifest["missing_drives"] == []
    assert set(manifest["drives"]) == {DRIVE} and manifest["calib"]["2011_09_26"] != "missing"
    # content hashes of what the pipeline reads: image_02 (7 + timestamps), image_03 (6 + timestamps), oxts
    # (5 + 2), and the velodyne scan of each test frame on disk (not every scan of the drive)
    scans = [f for f in TEST if (copy / DRIVE / "velodyne_points/data" / f"{int(f.split()[1]):010d}.bin").is_file()]
    assert manifest["drives"][DRIVE]["files"] == 8 + 7 + 7 + len(scans)
    assert manifest["make3d"] == {"root": "data/make3d", "status": "absent"}  # the paper preset's Test134 URLs:
    assert "will not run" in r.stderr                                          # not fetched, said why
    first = (project / "data/manifests/raw.json").read_bytes()
    run_stage("download", project, net_log=net_log)
    assert (project / "data/manifests/raw.json").read_bytes() == first         # unchanged copy, same bytes
    assert not net_log.exists(), net_log.read_text()                           # no network attempt at all
    assert snapshot(copy) == before                                            # nothing written in the copy
    assert not (project / "data" / "downloads").exists()

    frame = copy / DRIVE / "image_02" / "data" / "0000000003.png"             # the user touches a frame:
    make_writable(copy)
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 1_000_000_000))
    run_stage("download", project, net_log=net_log)
    assert (project / "data/manifests/raw.json").read_bytes() == first         # same content, same manifest
    frame.write_bytes((copy / DRIVE / "image_02" / "data" / "0000000004.png").read_bytes())  # and edits it
    run_stage("download", project, net_log=net_log)
    edited = json.loads((project / "data/manifests/raw.json").read_text())
    assert edited["drives"][DRIVE]["digest"] != manifest["drives"][DRIVE]["digest"]


def test_published_lists_on_a_partial_copy_report_the_missing_drives(copy, tmp_path):
    """The issue's run: eigen_zhou / eigen on a copy holding one of their 60 drives. No fetch, no error."""
    project = _project(tmp_path, copy, splits_dir=str(REPO / "psdif" / "splits"), train_split="eigen_zhou",
                       test_split="eigen")
    net_log = tmp_path / "net.log"
    r = run_stage("download", project, net_log=net_log)
    manifest = json.loads((project / "data/manifests/raw.json").read_text())
    assert list(manifest["drives"]) == [DRIVE] and len(manifest["missing_drives"]) == 59
    assert "59 of the 60 drives" in r.stderr and "download.fetch: missing" in r.stderr
    assert not net_log.exists(), net_log.read_text()


def test_no_drive_on_disk_is_a_clear_error_without_network(tmp_path):
    project = _project(tmp_path, tmp_path / "nothing_here")
    write_lists(project / "my_splits" / "mine", train=TRAIN, test=TEST)
    net_log = tmp_path / "net.log"
    r = run_stage("download", project, net_log=net_log, check=False)
    assert r.returncode != 0 and "none of the 1 drives" in r.stderr and "download.fetch: missing" in r.stderr
    assert "Traceback" not in r.stderr and not net_log.exists()
    assert not (tmp_path / "nothing_here").exists()


# ------------------------------------------------------------------------------------------ custom lists

@pytest.mark.parametrize("stage", ["download", "filter", "export_gt"])
def test_malformed_custom_list_names_file_and_line(tmp_path, stage):
    project = _project(tmp_path, tmp_path / "raw")
    lists = project / "my_splits" / "mine"
    write_lists(lists, train=TRAIN, test=TEST)
    bad = "train" if stage != "export_gt" else "test"
    (lists / f"{bad}_files.txt").write_text(f"{DRIVE} 1 l\n{DRIVE} seven l\n")
    r = run_stage(stage, project, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert f"my_splits/mine/{bad}_files.txt:2: expected '<date>/<drive> <frame> <l|r>'" in r.stderr


@pytest.mark.parametrize("stage,role", [("download", "train"), ("download", "test"), ("filter", "train"),
                                        ("export_gt", "test")])
def test_missing_custom_list_names_the_file(tmp_path, stage, role):
    project = _project(tmp_path, tmp_path / "raw")
    write_lists(project / "my_splits" / "mine", **{"train": TRAIN, "test": TEST, role: []})
    (project / "my_splits" / "mine" / f"{role}_files.txt").unlink()
    r = run_stage(stage, project, check=False)
    assert r.returncode != 0 and f"my_splits/mine/{role}_files.txt" in r.stderr and "Traceback" not in r.stderr


def test_filter_and_gt_export_use_the_frames_on_disk_and_count_the_rest(copy, tmp_path):
    """A partial copy: listed lines whose drive / frame / neighbours / scan are absent are skipped and counted;
    the GT file holds the frames it covers; the input lists are read, never written."""
    project = _project(tmp_path, copy, train={"batch_size": 4})  # the 4 kept lines fill one batch
    lists = project / "my_splits" / "mine"
    other = "2011_09_26/2011_09_26_drive_0002_sync"
    write_lists(lists, train=TRAIN + [f"{other} 7 l", f"{DRIVE} 25 l"], val=VAL,
                test=[f"{DRIVE} 5 l", f"{other} 3 l", f"{DRIVE} 25 l", f"{DRIVE} 30 l", f"{DRIVE} 25 r"])
    listed = {p.name: p.read_bytes() for p in lists.iterdir()}
    for stage in ("download", "filter", "export_gt"):
        run_stage(stage, project)
    assert {p.name: p.read_bytes() for p in lists.iterdir()} == listed
    cover = json.loads((project / "metrics/filter.json").read_text())["coverage"]
    assert (cover["train"]["listed"], cover["train"]["used"], cover["train"]["missing"]) == (6, 4, 2)
    assert cover["train"]["missing_by_reason"] == {"drive not on disk": 1, "frame or a neighbour not on disk": 1}
    assert cover["train"]["first_missing"] == [f"{other} 7 l (drive not on disk)",
                                               f"{DRIVE} 25 l (frame or a neighbour not on disk)"]
    assert (cover["val"]["listed"], cover["val"]["used"]) == (1, 1)
    report = json.loads((project / "metrics/export_gt.json").read_text())
    assert (report["listed"], report["used"], report["missing"]) == (5, 2, 3)
    assert report["missing_by_reason"] == {"drive not on disk": 1, "image not on disk": 2}

    from psdif.data import kitti
    from psdif.evaluation.metrics import load_gt_depths, load_gt_frames

    frames, n_listed = load_gt_frames(project / "data/eval/gt_depths.npz")
    assert frames == [f"{DRIVE} 5 l", f"{DRIVE} 25 l"] and n_listed == 5
    for line, gt in zip(frames, load_gt_depths(project / "data/eval/gt_depths.npz")):
        ref = kitti.parse_split_line(line)
        expected = kitti.generate_depth_map(copy / "2011_09_26", kitti.velodyne_path(copy, ref.folder, ref.frame),
                                            cam=2, vel_depth=True)
        np.testing.assert_array_equal(gt, expected)
        assert gt.shape == (375, 1242) and (gt > 0).sum() > 10_000


def test_an_empty_train_list_stops_the_filter_with_the_reason(copy, tmp_path):
    """A custom test list on the training drive no longer empties the train list; a train list with no usable
    frame stops the filter (before pseudo-labelling) saying why, and the report is still written."""
    project = _project(tmp_path, copy, train={"batch_size": len(TRAIN)})
    write_lists(project / "my_splits" / "mine", train=[f"{DRIVE} 25 l", f"{DRIVE} 0 l"], test=TEST)
    run_stage("download", project)
    r = run_stage("filter", project, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no training frame left from my_splits/mine/train_files.txt (2 listed" in r.stderr
    assert "'frame or a neighbour not on disk': 2" in r.stderr
    assert json.loads((project / "metrics/filter.json").read_text())["coverage"]["train"]["used"] == 0
    # the test list names frames of the same drive: the train lines survive
    write_lists(project / "my_splits" / "mine", train=TRAIN)
    run_stage("filter", project)
    assert (project / "data/lists/train_files.txt").read_text().splitlines() == TRAIN


# ------------------------------------------------------------------------------------------ download

def test_download_from_a_local_server_resumes_after_a_kill(kitti_mini, tmp_path):
    """fetch: missing on an empty folder: the calibration and drive archives (built from the sample, served on
    127.0.0.1) are fetched to data/downloads; SIGKILL mid-archive, run again: it resumes with a Range request
    and the copy is complete, byte for byte, with nothing else in it."""
    raw = tmp_path / "kitti_raw"
    archives = kitti_archives(kitti_mini)
    drive_zip = "/raw_data/2011_09_26_drive_0001/2011_09_26_drive_0001_sync.zip"
    with ArchiveServer(archives) as server:
        project = _project(tmp_path, raw, download={"fetch": "missing", "url": server.url, "retries": 0},
                           eval={"make3d_root": None, "make3d_urls": [], "make3d_sha256": []})
        write_lists(project / "my_splits" / "mine", train=TRAIN, test=TEST)
        server.throttle = 0.02
        part = project / "data" / "downloads" / "2011_09_26_drive_0001_sync.zip.part"
        proc = subprocess.Popen([sys.executable, str(REPO / "stages/download.py")], cwd=project,
                                env=env(tmp_path / "net.log", loopback=True),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and (not part.exists() or part.stat().st_size < 3 << 20):
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        have = part.stat().st_size
        assert 0 < have < len(archives[drive_zip])
        assert (raw / "2011_09_26" / "calib_cam_to_cam.txt").is_file()      # the first archive is complete
        assert not (raw / DRIVE).exists()                                   # the drive appears whole or not at all

        server.throttle = 0.0
        run_stage("download", project, net_log=tmp_path / "net.log", loopback=True)
        assert (drive_zip, have) in server.requests                         # resumed where it stopped
        assert [r for r in server.requests if r[0] == drive_zip][0] == (drive_zip, 0)
    assert not (tmp_path / "net.log").exists()
    got = {str(p.relative_to(raw)): p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    want = {str(p.relative_to(kitti_mini)): p.read_bytes() for p in (kitti_mini / "2011_09_26").rglob("*")
            if p.is_file()}
    assert got == want                                                      # complete, nothing else
    assert list((project / "data" / "downloads").iterdir()) == []
    assert json.loads((project / "data/manifests/raw.json").read_text())["missing_drives"] == []
    # on disk now: a further run fetches nothing (the server is gone)
    run_stage("download", project, net_log=tmp_path / "net.log", loopback=True)


# ------------------------------------------------------------------------------------------ labels, figures

class _ConstantSegmenter(torch.nn.Module):
    """Stands in for the DeepLabv3+ network: class ``c`` everywhere, ``c`` read from the checkpoint file."""

    def __init__(self, path):
        super().__init__()
        self.c = Path(path).read_bytes()[0]

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 19, *x.shape[-2:])
        logits[:, self.c] = 1.0
        return logits


def test_a_replaced_checkpoint_relabels_even_when_forced(tmp_path, monkeypatch):
    """`dvc repro -f pseudolabel` (or the checkpoint's fingerprint changing) after replacing the checkpoint at
    the same path: the labels are made again with the new file, not kept from the old one."""
    from tests.test_data import FOLDER, write_tiny_kitti
    from psdif.semantics import deeplab
    from psdif.semantics.labels import label_path, read_label_png

    raw, _, _ = write_tiny_kitti(tmp_path / "tiny", frames=range(0, 4))
    ckpt = tmp_path / "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    ckpt.write_bytes(bytes([3]) * 64)
    project = _project(tmp_path, raw, pseudolabel={"checkpoint": str(ckpt)},
                       model={"encoder_weights": None, "pose_weights": None})  # only the labeller matters here
    write_lists(project / "my_splits" / "mine", train=[f"{FOLDER} 1 l"], test=[f"{FOLDER} 2 l"])
    write_lists(project / "data" / "lists", train=[f"{FOLDER} 1 l"], val=[])
    monkeypatch.chdir(project)
    monkeypatch.setattr(deeplab, "load_cityscapes_deeplab", _ConstantSegmenter)
    check, pseudolabel = _load_stage("check"), _load_stage("pseudolabel")
    label = project / label_path(Path("data/pseudolabels"), FOLDER, "r", 3)

    check.main([])
    pseudolabel.main([])
    assert (read_label_png(label) == 3).all()
    ckpt.write_bytes(bytes([5]) * 64)                     # same path, same size, other weights
    check.main([])
    pseudolabel.main([])                                  # what `dvc repro [-f] pseudolabel` runs
    assert (read_label_png(label) == 5).all()


def test_figure_frames_past_the_test_frames_are_dropped_with_a_warning(capsys):
    figures = _load_stage("figures")
    frames = ["a", "b"]
    assert figures.pick_frames([0, 10, 20], frames, "test frames") == ["a"]
    assert "[10, 20] are outside the 2 test frames" in capsys.readouterr().err
    assert figures.pick_frames([5, 7], frames, "test frames") == ["a", "b"]
    assert figures.pick_frames([1], frames, "test frames") == ["b"]
    assert capsys.readouterr().err.count("warning") == 1
