"""Outputs verified, not assumed: the stages that keep files across runs (pseudolabel, boundary, prepare) check
them against their last manifest (psdif.io.check_tree), and DVC reruns the owning stage when a file of its tree
is deleted or edited (the trees are `cache: false, persist: true` outputs in dvc.yaml)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from psdif.io import check_tree, md5_file, tree_manifest
from tests.project import copy_tracked

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_check_tree_sorts_kept_missing_changed_unrecorded_new_and_stray(tmp_path):
    root = tmp_path / "t"
    _tree(root, {f"d/{i}.png": bytes([i]) * (10 + i) for i in range(6)})
    (root / ".config").write_text("c")  # hidden: neither listed nor stray
    record = tree_manifest(root, "**/*.png")
    (root / "d/0.png").unlink()                                     # missing
    st = os.stat(root / "d/1.png")
    (root / "d/1.png").write_bytes(bytes([9]) * 11)                 # changed, same size and mtime
    os.utime(root / "d/1.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    _tree(root, {"d/6.png": b"interrupted run", "d/stray.png": b"x"})
    expected = [f"d/{i}.png" for i in range(8)]                     # 6 unrecorded, 7 new
    check = check_tree(root, expected, record, "**/*.png", workers=2)
    assert (check.kept, check.missing, check.changed) == (["d/2.png", "d/3.png", "d/4.png", "d/5.png"],
                                                          ["d/0.png"], ["d/1.png"])
    assert (check.unrecorded, check.new, check.stray) == (["d/6.png"], ["d/7.png"], ["d/stray.png"])
    assert check.todo == ["d/0.png", "d/1.png", "d/7.png"]
    assert not (root / "d/1.png").exists() and not (root / "d/stray.png").exists()  # redone / not ours
    assert (root / "d/6.png").exists() and (root / ".config").exists()
    assert check.report("pseudolabel", "label", "relabelling") == (
        "pseudolabel: 4 labels kept, 1 missing and 1 changed since the manifest, 1 label of an interrupted run "
        "kept, 1 not made yet, 1 stray file removed: relabelling 3")
    assert {rel: md5_file(root / rel) for rel in check.kept} == {rel: record[rel] for rel in check.kept}


def test_check_tree_without_a_manifest_keeps_what_is_there(tmp_path):
    root = tmp_path / "t"
    _tree(root, {"a.png": b"a"})
    check = check_tree(root, ["a.png", "b.png"], None, "**/*.png")
    assert (check.unrecorded, check.new, check.kept) == (["a.png"], ["b.png"], [])
    assert check.report("boundary", "mask", "recomputing") == (
        "boundary: no manifest of this configuration yet, 1 mask on disk kept, 1 not made yet: recomputing 1")


def test_check_tree_by_size_and_mtime(tmp_path):
    root = tmp_path / "t"
    _tree(root, {"a.bin": b"aaaa", "b.bin": b"bbbb"})
    record = tree_manifest(root, content=False)
    (root / "b.bin").write_bytes(b"bbbbb")
    check = check_tree(root, ["a.bin", "b.bin"], record, content=False)
    assert (check.kept, check.changed) == (["a.bin"], ["b.bin"])


# ------------------------------------------------------------------------------------------ through dvc repro

TINY = {
    "data": {"height": 64, "width": 96},
    "synthetic": {"image_width": 192, "image_height": 64, "train_drives": 1, "val_drives": 1, "test_drives": 1,
                  "frames_per_drive": 8, "test_frames_per_drive": 2, "supersample": 1, "make3d_images": 0},
    "pseudolabel": {"labeller": "oracle"},
    "train": {"batch_size": 2},  # the filter refuses a batch the 6 kept training frames cannot fill
}


def _dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    from tests.test_e2e import BIN, _run

    return _run([str(BIN / "dvc"), *args], project, check=check, timeout=600)


def _ran(out: str) -> set[str]:
    """The stages a repro ran, less the two that run on every repro (check, download)."""
    from tests.test_e2e import _ran as ran

    return ran(out) - {"check", "download"}


@pytest.fixture(scope="module")
def repro_prepare(tmp_path_factory) -> Path:
    """The tracked files in a fresh git repo with a tiny params.yaml, reproduced up to the prepare stage."""
    from tests.test_e2e import _merge, _run

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("outputs") / "psdif"
    copy_tracked(dest)
    params = _merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(cmd, dest)
    _dvc(dest, "repro", "prepare")
    return dest


def _arrays(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_deleted_and_replaced_outputs_rerun_their_stage_through_dvc(repro_prepare):
    """`rm -rf data/pseudolabels`, one deleted mask, one label PNG replaced by another frame's, a deleted
    prepared tree: each `dvc repro prepare` reruns exactly the stage that owns the files, which redoes them
    (the bytes of the first run come back) and writes the same manifest, so nothing downstream reruns; so does
    `dvc repro -f -s pseudolabel`. A stage run by hand on a missing label stops with one `error:` line whose
    command works."""
    project = repro_prepare
    labels, masks, manifests = project / "data/pseudolabels", project / "data/boundaries", project / "data/manifests"
    first = {"labels": _snapshot(labels), "masks": _snapshot(masks), "manifests": _snapshot(manifests),
             "prepared": _arrays(project / "data/prepared")}
    n_labels = len([k for k in first["labels"] if k.endswith(".png")])
    assert n_labels == 3 * 8 * 2

    shutil.rmtree(labels)
    out = _dvc(project, "repro", "prepare").stdout
    assert _ran(out) == {"pseudolabel"}, out
    assert f"pseudolabel: 0 labels kept, {n_labels} missing and 0 changed since the manifest: " \
           f"relabelling {n_labels}" in out, out
    assert _snapshot(labels) == first["labels"] and _snapshot(manifests) == first["manifests"]

    names = sorted(k for k in first["masks"] if k.endswith(".png"))
    (masks / names[3]).unlink()
    out = _dvc(project, "repro", "prepare").stdout
    assert _ran(out) == {"boundary"}, out
    assert f"boundary: {len(names) - 1} masks kept, 1 missing and 0 changed since the manifest: recomputing 1" in out
    assert _snapshot(masks) == first["masks"] and _snapshot(manifests) == first["manifests"]

    pngs = sorted(k for k in first["labels"] if k.endswith(".png"))
    victim = pngs[2]
    donor = next(k for k in pngs if first["labels"][k] != first["labels"][victim])  # static frames look alike
    for command in (("repro", "prepare"), ("repro", "-f", "-s", "pseudolabel")):
        (labels / victim).write_bytes(first["labels"][donor])
        out = _dvc(project, *command).stdout
        assert _ran(out) == {"pseudolabel"}, (command, out)
        assert f"pseudolabel: {n_labels - 1} labels kept, 0 missing and 1 changed since the manifest: " \
               "relabelling 1" in out, out
        assert (labels / victim).read_bytes() == first["labels"][victim]
        assert _snapshot(manifests) == first["manifests"]

    shutil.rmtree(project / "data/prepared")
    out = _dvc(project, "repro", "prepare").stdout
    assert _ran(out) == {"prepare"}, out
    assert _arrays(project / "data/prepared") == first["prepared"] and _snapshot(manifests) == first["manifests"]

    status = json.loads(_dvc(project, "status", "prepare", "--json").stdout)  # prepare and its upstream
    assert set(status) <= {"check", "download"}, status  # only the two that run on every repro

    # the prepare stage run by hand (not through dvc) on a lost label it reads: one error line naming the file
    # and a command that works (dvc sees the loss and reruns pseudolabel, then prepare)
    from psdif.data.kitti import read_split
    from psdif.paths import TRAIN_LIST
    from psdif.semantics.labels import label_path
    from tests.test_e2e import BIN, _run

    target = read_split(project / TRAIN_LIST)[0]
    lost = label_path(labels, target.folder, target.side, target.frame)
    lost.unlink()
    shutil.rmtree(project / "data/prepared/labels")
    r = _run([str(BIN / "python"), "stages/prepare.py"], project, check=False)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert lines[-1].startswith(f"error: {lost.relative_to(project)}: label PNG not found") and \
        lines[-1].endswith("dvc repro pseudolabel"), r.stderr
    out = _dvc(project, "repro", "prepare").stdout
    assert _ran(out) == {"pseudolabel", "prepare"}, out
    assert "relabelling 1" in out and lost.read_bytes() == first["labels"][str(lost.relative_to(labels))]
    assert _arrays(project / "data/prepared") == first["prepared"] and _snapshot(manifests) == first["manifests"]
