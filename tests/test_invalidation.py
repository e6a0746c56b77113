"""Granular invalidation: what a changed file of the KITTI copy reruns is derived from who reads it.

Content hashes survive ``touch`` (hashed once, cached by size / mtime / inode); the raw manifest is split into
raw_train.json (labelling and training side) and raw_test.json (test frames: export_gt / evaluate / figures);
train stages depend on the prepared arrays, never on the raw tree; a changed frame relabels that frame only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from psdif.config import default_params, preset_path
from psdif.data import kitti
from tests.kitti_copy import DRIVE, make_writable, paper_params, read_only_copy, run_stage, write_lists
from tests.test_pipeline import committed_copy  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ content hashes

def test_touch_rehashes_nothing_and_an_edit_rehashes_only_that_file(tmp_path):
    from psdif.data.ondisk import ContentState, content_files
    from psdif.io import md5_file

    root = tmp_path / "copy"
    for i in range(5):
        (root / "d" / f"{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (root / "d" / f"{i}.bin").write_bytes(bytes([i]) * 1000)
    state_file = tmp_path / "state.json"
    state = ContentState(state_file, progress=False)
    first = content_files(root, "d", state)
    state.save()
    assert first == {f"d/{i}.bin": md5_file(root / "d" / f"{i}.bin") for i in range(5)}  # the bytes' MD5
    assert state.hashed == 5

    st = (root / "d/2.bin").stat()
    os.utime(root / "d/2.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: same bytes
    state = ContentState(state_file, progress=False)
    assert content_files(root, "d", state) == first
    assert state.hashed == 1                                                  # only the touched file re-read
    state.save()
    state = ContentState(state_file, progress=False)
    assert content_files(root, "d", state) == first and state.hashed == 0    # and then not even that one
    (root / "d/3.bin").write_bytes(b"edited")
    state = ContentState(state_file, progress=False)
    edited = content_files(root, "d", state)
    assert state.hashed == 1 and {k for k in first if edited[k] != first[k]} == {"d/3.bin"}


def test_split_sends_test_scans_to_the_test_side_only():
    from psdif.data.ondisk import split_raw

    d = "2011_09_26/2011_09_26_drive_0001_sync"
    files = {f"{d}/image_02/data/0000000005.png": "a", f"{d}/image_02/data/0000000006.png": "b",
             f"{d}/image_03/data/0000000005.png": "c", f"{d}/oxts/data/0000000005.txt": "d",
             f"{d}/velodyne_points/data/0000000005.bin": "e", f"{d}/velodyne_points/data/0000000006.bin": "f",
             "2011_09_26/calib_cam_to_cam.txt": "g", "synthetic_gt/x/semantic_02/0000000005.png": "h"}
    train, test = split_raw(files, [kitti.FrameRef(d, 5, "l")], "png")
    assert not any("velodyne" in k for k in train)
    assert set(test) == {f"{d}/image_02/data/0000000005.png", f"{d}/velodyne_points/data/0000000005.bin",
                         "2011_09_26/calib_cam_to_cam.txt"}
    assert "synthetic_gt/x/semantic_02/0000000005.png" in train and f"{d}/oxts/data/0000000005.txt" in train
    # generated data: the test frame's dense depth goes to the test side, its labels to both (the evaluate
    # stage's boundary metrics read them); other frames' labels stay on the train side only
    gt = "synthetic_gt/2011_09_26_drive_0001_sync"
    dense = {f"{gt}/depth_02/0000000005.png": "i", f"{gt}/semantic_02/0000000005.png": "j",
             f"{gt}/semantic_02/0000000006.png": "k", f"{gt}/semantic_03/0000000005.png": "l"}
    train, test = split_raw({**files, **dense}, [kitti.FrameRef(d, 5, "l")], "png")
    assert set(test) - set(files) == {f"{gt}/depth_02/0000000005.png", f"{gt}/semantic_02/0000000005.png"}
    assert {k for k in dense if "semantic" in k} <= set(train) and f"{gt}/depth_02/0000000005.png" not in train


# ------------------------------------------------------------------------------------------ download (KITTI sample)

TRAIN = [f"{DRIVE} {i} l" for i in (1, 2, 3)]
TEST = [f"{DRIVE} 5 l"]


@pytest.fixture()
def project(kitti_mini, tmp_path):
    copy = read_only_copy(kitti_mini, tmp_path / "my_kitti")
    project = tmp_path / "project"
    project.mkdir()
    data = {"raw_root": str(copy), "splits_dir": "my_splits", "train_split": "mine", "test_split": "mine",
            "num_workers": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(paper_params(data=data), sort_keys=False))
    write_lists(project / "my_splits" / "mine", train=TRAIN, test=TEST)
    yield project, copy
    make_writable(copy)


def _manifests(project: Path) -> tuple[bytes, bytes]:
    return ((project / "data/manifests/raw_train.json").read_bytes(),
            (project / "data/manifests/raw_test.json").read_bytes())


def test_kitti_copy_touch_reruns_nothing_and_a_test_scan_reaches_only_the_test_side(project):
    project, copy = project
    r = run_stage("download", project)
    assert "hashed" in r.stdout and "ms per file" in r.stdout, r.stdout          # the one-time cost, measured
    train, test = _manifests(project)
    scan = kitti.velodyne_path(copy, DRIVE, 5)
    assert f"{DRIVE}/velodyne_points/data/0000000005.bin" in json.loads(test)["files"]
    assert not any("velodyne" in k for k in json.loads(train)["files"])
    make_writable(copy)
    for path in (scan, kitti.image_path(copy, kitti.FrameRef(DRIVE, 2, "l"))):     # touch: same bytes
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = run_stage("download", project)
    assert _manifests(project) == (train, test)
    assert "hashed 2 of" in r.stdout, r.stdout                                  # only the touched files re-read
    scan.unlink()                                                              # a deleted test scan
    run_stage("download", project)
    after_train, after_test = _manifests(project)
    assert after_train == train and after_test != test
    image = kitti.image_path(copy, kitti.FrameRef(DRIVE, 2, "l"))             # an edited training frame
    image.write_bytes(kitti.image_path(copy, kitti.FrameRef(DRIVE, 3, "l")).read_bytes())
    run_stage("download", project)
    assert _manifests(project)[0] != train and _manifests(project)[1] == after_test


# ------------------------------------------------------------------------------------------ dvc status

def _changed(status) -> set[str]:
    return set(status()) - {"check", "download"}


def _edit_and_status(dest: Path, status, rel: str) -> set[str]:
    path = dest / rel
    before = path.read_bytes()
    try:
        path.write_bytes(before + b"edited\n")
        return _changed(status)
    finally:
        path.write_bytes(before)


def test_dvc_status_a_test_side_change_reaches_only_the_evaluation(committed_copy):  # noqa: F811
    dest, status = committed_copy
    names = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]
    evaluation = {n for n in names if n.startswith("evaluate_")} | {"export_gt", "figures"}
    assert _edit_and_status(dest, status, "data/manifests/raw_test.json") == evaluation
    train_side = _edit_and_status(dest, status, "data/manifests/raw_train.json")
    assert not any(n.startswith(("train_", "evaluate_", "export_gt")) for n in train_side), train_side
    assert {"pseudolabel", "prepare", "filter"} <= train_side
    trains = _edit_and_status(dest, status, "data/manifests/prepared_images.json")
    # prepare's own output changed (it redoes what differs), and every variant trains from it
    assert {n.split("@")[0] for n in trains} == {n for n in names if n.startswith("train_")} | {"prepare"}
    assert _changed(status) == set()                                              # everything put back


# ------------------------------------------------------------------------------------------ per-frame labels

TINY_SYNTHETIC = dict(image_width=128, image_height=64, train_drives=1, val_drives=1, test_drives=1,
                      frames_per_drive=8, test_frames_per_drive=2, supersample=1, make3d_images=0)
N_LABELS = 3 * 8 * 2


@pytest.fixture()
def generated(tmp_path) -> Path:
    from psdif.data.synthetic import generate_mini_kitti

    cfg = dataclasses.replace(default_params().synthetic, **TINY_SYNTHETIC)
    generate_mini_kitti(cfg, tmp_path / "kitti_raw", tmp_path / "splits", progress=False)
    return tmp_path


def _pseudolabel(folder: Path, generated: Path, monkeypatch, capsys) -> str:
    raw = yaml.safe_load(preset_path("embedded").read_text())
    raw["data"].update(raw_root=str(generated / "kitti_raw"), splits_dir=str(generated / "splits"), height=64,
                       width=64)
    raw["synthetic"].update(TINY_SYNTHETIC)
    raw["pseudolabel"].update(teacher_steps=2, teacher_batch_size=2, teacher_height=64, teacher_width=64,
                              batch_size=4)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = importlib.util.spec_from_file_location("pseudolabel_stage", REPO / "stages" / "pseudolabel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(folder)
    capsys.readouterr()
    module.main(["--params", str(folder / "params.yaml")])
    return capsys.readouterr().out


def _frame_of_role(generated: Path, role: str) -> Path:
    from psdif.data.static_filter import read_drive_roles

    roles = read_drive_roles(generated / "splits" / "synthetic_drives.txt")
    drive = next(d for d, r in roles.items() if r == role)
    return kitti.image_path(generated / "kitti_raw", kitti.FrameRef(drive, 3, "l"))


def test_a_changed_frame_relabels_that_frame_only_and_a_training_frame_retrains_the_teacher(
        generated, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "project"
    _pseudolabel(folder, generated, monkeypatch, capsys)
    root = folder / "data" / "pseudolabels"
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    teacher = (folder / "data/teacher/teacher.pt").stat().st_mtime_ns
    assert len(stamps) == N_LABELS

    image = _frame_of_role(generated, "test")      # a held-out frame: not one the teacher learns from
    pixels = np.array(__import__("PIL.Image", fromlist=["Image"]).open(image))
    __import__("PIL.Image", fromlist=["Image"]).fromarray(255 - pixels).save(image)
    out = _pseudolabel(folder, generated, monkeypatch, capsys)
    assert "configuration changed" not in out, out
    assert "1 label made from an input that changed since" in out and "relabelling 1" in out, out
    relabelled = [p for p, t in stamps.items() if p.stat().st_mtime_ns != t]
    assert [p.relative_to(root).as_posix() for p in relabelled] == [
        str(image.relative_to(generated / "kitti_raw"))]
    assert (folder / "data/teacher/teacher.pt").stat().st_mtime_ns == teacher      # not retrained

    manifest = (folder / "data/manifests/pseudolabels.json").read_bytes()
    out = _pseudolabel(folder, generated, monkeypatch, capsys)                     # nothing changed: nothing redone
    assert "nothing to redo" in out and (folder / "data/manifests/pseudolabels.json").read_bytes() == manifest

    image = _frame_of_role(generated, "train")     # a frame the teacher learns from: a new teacher, every label
    pixels = np.array(__import__("PIL.Image", fromlist=["Image"]).open(image))
    __import__("PIL.Image", fromlist=["Image"]).fromarray(255 - pixels).save(image)
    out = _pseudolabel(folder, generated, monkeypatch, capsys)
    assert "configuration changed, relabelling everything" in out and "teacher:" in out, out


# ------------------------------------------------------------------------------------------ prepared groups

def test_a_changed_frame_re_prepares_its_own_group_only(tmp_path):
    """Per-frame input hashes: a changed label of camera l re-prepares the l label array; the r arrays and the
    image arrays are kept and the image manifest (what image-only variants depend on) stays byte-identical."""
    import os

    from psdif.data.prepared import group_file, prepare_all
    from psdif.io import md5_file
    from psdif.semantics.labels import label_path, write_label_png
    from tests.test_data import FOLDER, targets, write_tiny_kitti

    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 8))
    frames = targets(range(1, 7)) + targets(range(1, 7), "r")
    kinds = ("images", "labels", "boundaries")
    manifests = {k: tmp_path / "manifests" / f"prepared_{k}.json" for k in kinds}

    def files() -> dict:  # what the raw_train / pseudo-label / boundary manifests list: path -> content hash
        return {k: {str(p.relative_to(r)): md5_file(p) for p in Path(r).rglob("*.png")}
                for k, r in zip(kinds, (raw, labels, boundary))}

    def run():
        prepare_all(str(raw), str(labels), str(boundary), "png", 48, 128, frames, tmp_path / "prepared", manifests,
                    files(), workers=1, progress=False)

    run()
    arrays = {(k, s): group_file(tmp_path / "prepared" / k, FOLDER, s) for k in kinds for s in "lr"}
    stamps = {key: os.stat(p).st_mtime_ns for key, p in arrays.items()}
    before = {k: m.read_bytes() for k, m in manifests.items()}
    run()                                                                       # nothing changed
    assert {k: m.read_bytes() for k, m in manifests.items()} == before
    write_label_png(label_path(labels, FOLDER, "l", 3), np.full((96, 256), 4, np.uint8))
    run()
    redone = {key for key, p in arrays.items() if os.stat(p).st_mtime_ns != stamps[key]}
    assert redone == {("labels", "l")}
    assert manifests["images"].read_bytes() == before["images"]
    assert manifests["labels"].read_bytes() != before["labels"]
