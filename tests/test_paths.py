"""Paths from split lists and frames stay inside their roots; psdif never writes into the user's KITTI copy.

A list line's drive folder may not climb out (``..``), jump elsewhere (absolute) or hide an empty component;
a drive folder that is a symbolic link out of ``data.raw_root`` is refused; every output path built from a
frame is joined by :func:`psdif.io.join_under`; and with ``data.source: kitti`` every atomic writer refuses
the copy (the download stage's extraction excepted).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from psdif.data import kitti
from psdif.io import (PathEscapeError, ReadOnlyTreeError, atomic_write_bytes, join_under, protect_tree,
                      save_torch, unprotect_all, writes_allowed)

DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"


def _list(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "lists" / "train_files.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize("folder,why", [
    ("2011_09_26/../../../../elsewhere/2011_09_26/2011_09_26_drive_0001_sync", "'..' component"),
    ("/home/someone/kitti/2011_09_26/2011_09_26_drive_0001_sync", "is absolute"),
    ("2011_09_26//2011_09_26_drive_0001_sync", "empty component"),
    ("2011_09_26/./2011_09_26_drive_0001_sync", "'.' component"),
])
def test_a_list_line_leaving_its_root_names_the_list_line_and_the_rule(tmp_path, folder, why):
    bad = f"{folder} 2 l"
    path = _list(tmp_path, f"{DRIVE} 1 l", bad)
    with pytest.raises(kitti.KittiError) as err:
        kitti.read_split(path)
    msg = str(err.value)
    assert f"{path}:2" in msg and bad in msg and why in msg, msg
    assert "relative path" in msg and "data.raw_root" in msg, msg  # what is allowed
    with pytest.raises(kitti.KittiError):          # nor can such a frame be made any other way
        kitti.FrameRef(folder, 2, "l")


def test_a_drive_folder_linked_out_of_raw_root_is_refused(tmp_path):
    root, outside = tmp_path / "raw", tmp_path / "outside"
    (outside / "2011_09_26_drive_0001_sync" / "image_02" / "data").mkdir(parents=True)
    (root / "2011_09_26").mkdir(parents=True)
    (root / "2011_09_26" / "2011_09_26_drive_0001_sync").symlink_to(outside / "2011_09_26_drive_0001_sync")
    path = _list(tmp_path, f"{DRIVE} 1 l")
    assert kitti.read_split(path) == [kitti.FrameRef(DRIVE, 1, "l")]  # the lexical form is fine ...
    with pytest.raises(kitti.KittiError) as err:                       # ... but not where it leads
        kitti.read_split(path, root)
    msg = str(err.value)
    assert f"{path}:1" in msg and "symbolic link" in msg and str(outside.resolve()) in msg, msg

    # the raw root itself may be a link (a copy on another disk): everything under it is inside it
    (root / "2011_09_26" / "2011_09_26_drive_0001_sync").unlink()
    real = tmp_path / "disk2" / "kitti"
    (real / DRIVE).mkdir(parents=True)
    (tmp_path / "linked_root").symlink_to(real)
    assert kitti.read_split(path, tmp_path / "linked_root") == [kitti.FrameRef(DRIVE, 1, "l")]


def test_output_paths_of_a_frame_stay_under_their_folder(tmp_path):
    from psdif.data.prepared import group_file
    from psdif.semantics.labels import label_path

    out = tmp_path / "data" / "pseudolabels"
    assert join_under(out, DRIVE, "image_02/data/0000000001.png") == out / DRIVE / "image_02/data/0000000001.png"
    assert label_path(out, DRIVE, "l", 1) == out / DRIVE / "image_02" / "data" / "0000000001.png"
    for bad in ("2011_09_26/../../../x", "/abs/2011_09_26/d", "a//b", "a/./b"):
        with pytest.raises(PathEscapeError):
            join_under(out, bad, "f.png")
        with pytest.raises(PathEscapeError):
            label_path(out, bad, "l", 1)
        with pytest.raises(PathEscapeError):
            group_file(out, bad, "l")
    # a link inside the output folder that points out of it
    (out / "2011_09_26").mkdir(parents=True)
    (tmp_path / "victim").mkdir()
    (out / "2011_09_26" / "2011_09_26_drive_0001_sync").symlink_to(tmp_path / "victim")
    with pytest.raises(PathEscapeError) as err:
        label_path(out, DRIVE, "l", 1)
    assert "symbolic link" in str(err.value) and str(out) in str(err.value)


def test_writers_refuse_a_protected_copy_except_where_allowed(tmp_path):
    from psdif.data.images import write_png

    copy = tmp_path / "kitti"
    (copy / DRIVE / "image_02" / "data").mkdir(parents=True)
    target = copy / DRIVE / "image_02" / "data" / "0000000001.png"
    target.write_bytes(b"the user's image")
    protect_tree(copy, "data.raw_root, your KITTI copy")
    try:
        for write in (lambda p: atomic_write_bytes(p, b"x"), lambda p: write_png(p, np.zeros((2, 2), np.uint8)),
                      lambda p: save_torch(p, {"a": 1})):
            with pytest.raises(ReadOnlyTreeError) as err:
                write(target)
            assert str(target) in str(err.value) and str(copy.resolve()) in str(err.value)
            # through a '..' path that enters the copy from outside too
            with pytest.raises(ReadOnlyTreeError):
                write(tmp_path / "out" / ".." / "kitti" / DRIVE / "new.png")
        assert target.read_bytes() == b"the user's image"
        assert sorted(p.name for p in (copy / DRIVE / "image_02" / "data").iterdir()) == ["0000000001.png"]
        atomic_write_bytes(tmp_path / "out" / "ok.bin", b"x")  # outside: fine
        with writes_allowed(copy / ".staging"):
            atomic_write_bytes(copy / ".staging" / "a.jpg", b"x")
        with pytest.raises(ReadOnlyTreeError):
            atomic_write_bytes(copy / ".staging" / "b.jpg", b"x")
    finally:
        unprotect_all()


def test_download_extraction_still_writes_into_a_protected_copy(tmp_path):
    """``download.fetch: missing`` extracts fetched archives into the copy (PNG -> JPEG conversion included):
    the one writer allowed there."""
    from psdif.data.download import extract_zip
    from psdif.data.images import read_image
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(png, format="PNG")
    archive = tmp_path / "2011_09_26_drive_0001_sync.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{DRIVE}/image_02/data/0000000000.png", png.getvalue())
    root = tmp_path / "kitti"
    root.mkdir()
    protect_tree(root, "data.raw_root, your KITTI copy")
    try:
        extract_zip(archive, root, jpeg_quality=95)
    finally:
        unprotect_all()
    jpg = root / DRIVE / "image_02" / "data" / "0000000000.jpg"
    assert jpg.is_file() and np.abs(read_image(jpg).astype(int) - 90).max() <= 2
    assert sorted(os.listdir(root)) == ["2011_09_26"]  # no staging folder left


# ------------------------------------------------------------------------------------------ end to end

@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_pseudolabel_stage_with_a_line_into_the_copy_fails_and_leaves_it_identical(kitti_mini, tmp_path,
                                                                                    monkeypatch, how):
    """The reported cases: a filtered-list line ``2011_09_26/../../../../<copy>/...`` that, joined to
    data/pseudolabels, lands on the copy's camera folder (the old code overwrote its PNGs with label maps and
    exited 0), and one with the copy's absolute path (the old code stopped with a traceback telling the user to
    delete their image). The copy is writable (so a writer would really overwrite it); the stage stops with
    one error naming the list, the line and the rule, and the copy is byte-identical afterwards."""
    from tests.kitti_copy import make_writable, read_only_copy, snapshot, write_lists
    from tests.test_realkitti import _ConstantSegmenter, _load_stage, _project
    from psdif.semantics import deeplab

    copy = read_only_copy(kitti_mini, tmp_path / "u" / "v" / "my_kitti")
    make_writable(copy)
    ckpt = tmp_path / "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    ckpt.write_bytes(bytes([3]) * 64)
    project = _project(tmp_path, copy, pseudolabel={"checkpoint": str(ckpt)},
                       model={"encoder_weights": None, "pose_weights": None})
    # from data/pseudolabels (project/data/pseudolabels) and from the copy (tmp/u/v/my_kitti) alike, four
    # '..' reach tmp_path: both joins name the copy's drive
    bad = f"2011_09_26/../../../../u/v/my_kitti/{DRIVE} 2 l" if how == "dotdot" else f"{copy / DRIVE} 2 l"
    assert (project / "data/pseudolabels/x/../../../../u/v/my_kitti" / DRIVE).resolve() == (copy / DRIVE).resolve()
    write_lists(project / "my_splits" / "mine", train=[f"{DRIVE} 1 l"], test=[f"{DRIVE} 3 l"])
    write_lists(project / "data" / "lists", train=[f"{DRIVE} 1 l", bad], val=[])
    before = snapshot(copy)
    monkeypatch.chdir(project)
    monkeypatch.setattr(deeplab, "load_cityscapes_deeplab", _ConstantSegmenter)
    with pytest.raises(SystemExit) as err:
        _load_stage("pseudolabel").main([])
    msg = str(err.value.code)
    assert msg.startswith("error: ") and "data/lists/train_files.txt:2" in msg and bad in msg, msg
    assert {"dotdot": "'..' component", "absolute": "is absolute"}[how] in msg and "relative path" in msg, msg
    assert snapshot(copy) == before


@pytest.mark.parametrize("stage", ["download", "filter", "export_gt"])
def test_the_stages_reading_the_users_lists_refuse_a_drive_linked_out_of_the_copy(kitti_mini, tmp_path, stage):
    """The first stages to read the user's lists check them against data.raw_root: a drive folder that is a
    symbolic link to a tree outside the copy stops the stage with one error line naming the list and line."""
    from tests.kitti_copy import read_only_copy, make_writable, run_stage, write_lists
    from tests.test_realkitti import _project

    elsewhere = read_only_copy(kitti_mini, tmp_path / "elsewhere")
    root = tmp_path / "raw"
    (root / "2011_09_26").mkdir(parents=True)
    (root / DRIVE).symlink_to(elsewhere / DRIVE)
    project = _project(tmp_path, root)
    role = "test" if stage == "export_gt" else "train"
    write_lists(project / "my_splits" / "mine", train=[f"{DRIVE} 1 l"], test=[f"{DRIVE} 2 l"])
    try:
        r = run_stage(stage, project, check=False)
    finally:
        make_writable(elsewhere)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    assert f"my_splits/mine/{role}_files.txt:1" in errors[0] and "symbolic link" in errors[0], errors[0]
