"""End to end on real KITTI: the paper preset run as a researcher with part of KITTI raw would run it.

The kitti-mini sample (drive 2011_09_26_0001: image_02 frames 0-5 and 25, image_03 0-5, velodyne 0-5 and
25, OXTS 0-4) is the user's read-only local copy; a checkpoint in the exact public Cityscapes DeepLabv3+
format (random weights) is built here; HRNet-W18 at 640x192; the user's own split folder (train frames 1-4,
test frames 5 and 25). `dvc repro` runs every stage, in a fresh git repo, with every network connection
refused, to Tables 1-3; then an edit of the test list is seen by DVC and reported by the tables. Nothing may
be written into the copy. Slow (minutes on a CPU); runs in CI, where ../shared is beside the repo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from psdif.reports import read_report
from psdif.variants import VARIANTS
from tests.kitti_copy import DRIVE, REPO, env, make_writable, paper_params, read_only_copy, snapshot, write_lists
from tests.project import copy_tracked

pytestmark = pytest.mark.slow
BIN = Path(__import__("sys").executable).parent
TRAIN = [f"{DRIVE} {i} l" for i in (1, 2, 3)] + [f"{DRIVE} 2 r"]
VAL = [f"{DRIVE} 4 l"]
TEST = [f"{DRIVE} 5 l", f"{DRIVE} 25 l"]


def _run(cmd: list[str], cwd: Path, net_log: Path, check: bool = True, timeout: int = 1800):
    e = env(net_log)
    e["TORCH_HOME"] = str(net_log.parent / "torch_home")  # the user's torch hub cache (imagenet pose weights)
    r = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}")
    return r


def public_deeplab_checkpoint(path: Path) -> Path:
    """best_deeplabv3plus_resnet101_cityscapes_os16.pth as published (VainF/DeepLabV3Plus-Pytorch's
    layout: model_state, optimizer_state, scheduler_state, cur_itrs, best_score), random weights."""
    from psdif.semantics.deeplab import CityscapesDeepLabV3Plus

    torch.manual_seed(0)
    model = CityscapesDeepLabV3Plus()
    torch.save({"cur_itrs": 30000, "model_state": model.state_dict(),
                "optimizer_state": {"state": {}, "param_groups": []}, "scheduler_state": {},
                "best_score": np.float64(0.7)}, path)
    return path


def paper_initialisation_files(repo: Path, torch_home: Path) -> tuple[Path, Path]:
    """The two files of the paper preset's initialisation (docs/paper_setting.md), random weights, where a user
    puts them: mmsegmentation's Cityscapes FCN-HRNet-W18 release ({'meta', 'state_dict': backbone.* +
    decode_head.*}) at the preset's path under data/checkpoints/, and torchvision's ImageNet ResNet-18 in the
    torch hub cache, where ``model.pose_weights: imagenet`` finds it offline."""
    import timm
    import torchvision

    torch.manual_seed(1)
    heads = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
    backbone = {k: v for k, v in timm.create_model("hrnet_w18", pretrained=False).state_dict().items()
                if k.split(".", 1)[0] not in heads}
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state.update({"decode_head.conv_seg.weight": torch.randn(19, 270, 1, 1), "decode_head.conv_seg.bias": torch.randn(19)})
    hrnet = repo / "data" / "checkpoints" / "fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth"
    hrnet.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"mmseg_version": "0.5.0+b2724da", "iter": 160000}, "state_dict": state}, hrnet)
    resnet = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    resnet.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    return hrnet, resnet


@pytest.fixture(scope="module")
def run(kitti_mini, tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tmp = tmp_path_factory.mktemp("e2e_real")
    copy = read_only_copy(kitti_mini, tmp / "my_kitti")
    ckpt = public_deeplab_checkpoint(tmp / "best_deeplabv3plus_resnet101_cityscapes_os16.pth")
    dest = tmp / "psdif"
    copy_tracked(dest)
    net_log = tmp / "network_attempts.log"
    _run([str(BIN / "python"), "-m", "psdif.cli", "preset", "paper", "--force"], dest, net_log)
    params = paper_params(
        data={"raw_root": str(copy), "splits_dir": "my_splits", "train_split": "mine", "test_split": "mine",
              "num_workers": 0},
        pseudolabel={"checkpoint": str(ckpt), "batch_size": 2},
        train={"epochs": 1, "max_steps": 1, "batch_size": 2, "checkpoint_every": 1, "log_every": 1},
        eval={"batch_size": 2})
    assert params["model"]["msfan_size"] == "w18" and (params["data"]["height"], params["data"]["width"]) == (192, 640)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_lists(dest / "my_splits" / "mine", train=TRAIN, val=VAL, test=TEST)
    assert params["model"]["pose_weights"] == "imagenet"  # the preset's own choice, found in the hub cache
    hrnet, _ = paper_initialisation_files(dest, tmp / "torch_home")
    assert Path(params["model"]["encoder_weights"]) == hrnet.relative_to(dest)
    before = snapshot(copy)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "paper preset, my lists"]):
        _run(cmd, dest, net_log)
    repro = _run([str(BIN / "dvc"), "repro"], dest, net_log)
    yield {"dest": dest, "copy": copy, "before": before, "net_log": net_log, "repro": repro}
    make_writable(copy)


def _table_rows(path: Path) -> list[list[str]]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_every_stage_ran_offline_and_nothing_was_written_into_the_copy(run):
    dest = run["dest"]
    ran = {line.split("'")[1] for line in run["repro"].stdout.splitlines() if line.startswith("Running stage")}
    seeds = yaml.safe_load((dest / "params.yaml").read_text())["train"]["seeds"]
    stages = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]
    expected = {f"{name}@{seed}" if "foreach" in stage else name for name, stage in stages.items()
                for seed in (seeds if "foreach" in stage else [None])}
    assert ran == expected
    assert not run["net_log"].exists(), run["net_log"].read_text()
    assert snapshot(run["copy"]) == run["before"]
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], dest, run["net_log"]).stdout)
    assert set(status) == {"check", "download"}, status
    # what the stages said about the partial data instead of failing
    out = run["repro"].stdout + run["repro"].stderr
    assert "eval.figure_frames [10, 20] are outside the 2 test frames" in out
    assert "Figure 5 not drawn" in out  # frame 5 has no frame 6 on disk, frame 25 no neighbours
    # the paper's initialisation (paper section 4.2) reached every MSFAN train stage and every pose net
    import re
    enc = re.findall(r"model\.encoder_weights: loaded (\d+)/(\d+) MSFAN encoder tensors from \S*fcn_hr18_512x1024", out)
    assert len(enc) == sum(VARIANTS[v].msfan for v in VARIANTS) * len(seeds), out[-3000:]
    assert all(int(a) > 0.8 * int(b) for a, b in enc)  # the backbone; coordinate attention starts random
    assert len(re.findall(r"model\.pose_weights: loaded 120/120 pose encoder tensors from \S*resnet18-f37072fd\.pth",
                          out)) == len(VARIANTS) * len(seeds), out[-3000:]
    for fig in ("boundary_fig4", "fig6_qualitative", "fig5_inconsistency"):
        assert (dest / "metrics/figures" / f"{fig}.png").stat().st_size > 1000


def test_results_say_what_they_measured(run):
    dest = run["dest"]
    for name in (*VARIANTS, "flat", "untrained"):
        m = read_report(dest / "metrics/eval" / f"{name}.json")   # the numbers, and the labels beside them
        assert (m["dataset"], m["test_split"], m["n_images"], m["test_listed"]) == ("KITTI raw", "mine", 2, 2), name
        assert 0 < m["abs_rel"] < 10
        assert "no Make3D Test134 images" in m["make3d"]["not_run"]
    cover = json.loads((dest / "metrics/coverage.json").read_text())
    assert [(cover[r]["listed"], cover[r]["used"]) for r in ("train", "val", "test")] == [(4, 4), (1, 1), (2, 2)]
    labels = json.loads((dest / "data/manifests/pseudolabels.json").read_text())["files"]
    assert len(labels) == 7 + 6                                  # every frame of both cameras on disk
    t1 = _table_rows(dest / "metrics/tables/table1.md")
    for row in t1[:4]:
        assert row[2] == "this run — KITTI raw, test split mine" and row[-1] == "2"
    t3 = _table_rows(dest / "metrics/tables/table3.md")
    # Method, Data, seven metrics, ratio med, ratio std, images, then the boundary columns: no dense GT on KITTI
    assert all(r[1] == "this run — KITTI raw, test split mine" and r[11] == "2" for r in t3[:5])
    assert all(r[12:15] == ["n/a (sparse GT)"] * 3 for r in t3[:5])
    text = {t: (dest / "metrics/tables" / f"table{t}.md").read_text(encoding="utf-8") for t in (1, 2, 3)}
    assert "different test sets" not in text[1] + text[3]
    assert "4 of 4 listed train lines; 1 of 1 listed val lines; 2 of 2 listed test frames" in text[1]
    assert "Make3D not run: no Make3D Test134 images (img-*.jpg) under eval.make3d_root=data/make3d" in text[2]
    assert "generated" not in text[1] + text[2] + text[3]


def test_an_edited_test_list_is_seen_and_reported(run):
    """Add a frame the copy lacks to the test list: DVC sees the edit, the rerun skips the frame and says so."""
    dest, net_log = run["dest"], run["net_log"]
    test_list = dest / "my_splits/mine/test_files.txt"
    test_list.write_text(test_list.read_text() + f"{DRIVE} 30 l\n")
    status = json.loads(_run([str(BIN / "dvc"), "status", "--json"], dest, net_log).stdout)
    stale = {s for s, changes in status.items() for c in changes
             if isinstance(c, dict) and "my_splits/mine/test_files.txt" in c.get("changed deps", {})}
    assert stale == {"filter", "pseudolabel", "export_gt"}
    r = _run([str(BIN / "dvc"), "repro"], dest, net_log)
    ran = {line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("Running stage")}
    assert not {f"train_{v}" for v in VARIANTS} & ran          # the training data did not change
    assert "1 of 3 test frames are not on disk" in r.stderr
    m = json.loads((dest / "metrics/eval/full.json").read_text())
    assert (m["n_images"], m["test_listed"]) == (2, 3)
    t1 = _table_rows(dest / "metrics/tables/table1.md")
    assert t1[0][2] == "this run — KITTI raw, test split mine, 2 of 3 listed frames"
    assert "2 of 3 listed test frames (not used: 1 image not on disk)" in \
        (dest / "metrics/tables/table1.md").read_text(encoding="utf-8")
    assert not net_log.exists() and snapshot(run["copy"]) == run["before"]
