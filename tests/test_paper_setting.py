"""The paper preset against the paper's §4.1-4.2 (read from the paper text when present) and the published
training list through the filter stage on the real KITTI sample; fp32 by default (docs/paper_setting.md)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from psdif import config
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
PAPER = SHARED_DATA.parent / "paper" / "paper.txt"
DRIVE = "2011_09_26/2011_09_26_drive_0001_sync"
CITYSCAPES_HRNET = "fcn_hr18_512x1024_160k_cityscapes_20200602_190822-221e4a4f.pth"


@pytest.fixture(scope="module")
def paper() -> config.Params:
    return config.load_params(config.preset_path("paper"))


@pytest.fixture(scope="module")
def section_4() -> str:
    if not PAPER.is_file():
        pytest.skip(f"paper text not found at {PAPER}")
    text = PAPER.read_text()
    return text[text.index("4.1. Datasets"):text.index("4.3. Quantitative")]


def test_paper_preset_has_the_settings_section_4_2_fixes(paper, section_4):
    """Each number the paper fixes, found in its text, equals the preset's value."""
    h, w = map(int, re.search(r"(\d+) × (\d+) pixels", section_4).groups())
    assert (paper.data.height, paper.data.width) == (h, w) == (192, 640)
    assert paper.train.epochs == int(re.search(r"trained for (\d+) epoch", section_4).group(1)) == 20
    assert paper.train.batch_size == int(re.search(r"batch size to (\d+)", section_4).group(1)) == 12
    assert re.search(r"learning rate is set to 10 4", section_4) and paper.train.lr == 1e-4  # "10^-4"
    assert paper.loss.alpha == float(re.search(r"set α to ([\d.]+)", section_4).group(1)) == 0.85
    mu = re.search(r"are set to ([\d.]+), ([\d.]+), and ([\d.]+)", section_4).groups()
    assert (paper.loss.mu1, paper.loss.mu2, paper.loss.mu3) == tuple(map(float, mu)) == (1.0, 0.2, 0.02)
    assert "HRNet [16] model pre-trained on Cityscapes" in section_4
    assert paper.model.msfan_size == "w18" and Path(paper.model.encoder_weights).name == CITYSCAPES_HRNET
    assert paper.model.pose_weights == "imagenet" and paper.model.baseline_width == paper.model.pose_width == 1.0
    assert "Eigen split" in section_4 and "697" in section_4
    assert (paper.data.train_split, paper.data.test_split) == ("eigen_zhou", "eigen")
    assert "DeepLabv3+ model with a ResNet-101 backbone" in section_4
    assert Path(paper.pseudolabel.checkpoint).name == "best_deeplabv3plus_resnet101_cityscapes_os16.pth"
    assert paper.train.amp is False  # fp32: the paper names no mixed precision
    assert paper.boundary.t == 10    # §3.3: "we empirically set T = 10"


def test_published_training_list_is_the_papers(section_4):
    """39,810 / 4,424 lines (the paper's "39,910" is a typo of Zhou et al.'s 39,810), 697 test lines."""
    splits = REPO / "psdif" / "splits"
    count = lambda p: sum(1 for line in p.read_text().splitlines() if line.strip())
    assert "39,910 samples for training and 4424 samples for validation" in section_4
    assert count(splits / "eigen_zhou" / "train_files.txt") == 39810
    assert count(splits / "eigen_zhou" / "val_files.txt") == 4424
    assert count(splits / "eigen" / "test_files.txt") == 697


def _filter_stage():
    spec = importlib.util.spec_from_file_location("filter_stage", REPO / "stages" / "filter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_filter_with_the_paper_settings_on_the_real_sample(kitti_mini, paper, tmp_path, monkeypatch, capsys):
    """stages/filter.py with the paper preset's filter settings (eigen_zhou, drop_static false) on drive 0001.

    Expected lists, derived here from the list text and a directory listing: the listed lines of the drive
    whose frame and both neighbours are on disk for that camera, in list order. Frame 2's OXTS is edited
    to a standstill: the report counts its two lines as static, and they stay (report only)."""
    from psdif.data.kitti import read_split

    raw = tmp_path / "kitti"
    shutil.copytree(kitti_mini / "2011_09_26", raw / "2011_09_26")
    oxts = raw / DRIVE / "oxts" / "data" / "0000000002.txt"
    fields = oxts.read_text().split()
    fields[8] = fields[9] = fields[10] = "0.0"                     # vf, vl, vu (m/s)
    oxts.write_text(" ".join(fields) + "\n")
    raw_params = yaml.safe_load(config.preset_path("paper").read_text())
    raw_params["data"]["raw_root"] = str(raw)
    # the published train lists beside a test list of a frame the sample has, and a batch its 8 kept lines
    # fill: with eigen's test list and the preset's 12 the filter stops (tests/test_early_failures.py)
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "eigen_zhou").symlink_to(REPO / "psdif" / "splits" / "eigen_zhou")
    (splits / "mine").mkdir()
    (splits / "mine" / "test_files.txt").write_text(f"{DRIVE} 5 l\n")
    raw_params["data"]["splits_dir"], raw_params["data"]["test_split"] = str(splits), "mine"
    raw_params["train"]["batch_size"] = 8
    assert raw_params["filter"] == config.to_dict(paper)["filter"] and raw_params["filter"]["drop_static"] is False
    work = tmp_path / "project"
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.chdir(work)
    _filter_stage().main([])

    def on_disk(side):
        folder = raw / DRIVE / f"image_0{2 if side == 'l' else 3}" / "data"
        return {int(p.stem) for p in folder.glob("*.png")}
    present = {s: on_disk(s) for s in "lr"}

    def expected(part):
        out = []
        for line in (REPO / "psdif/splits/eigen_zhou" / f"{part}_files.txt").read_text().splitlines():
            folder, frame, side = line.split()
            if folder == DRIVE and {int(frame) - 1, int(frame), int(frame) + 1} <= present[side]:
                out.append((folder, int(frame), side))
        return out
    got = lambda part: [(f.folder, f.frame, f.side) for f in read_split(Path("data/lists") / f"{part}_files.txt")]
    assert got("train") == expected("train") and len(expected("train")) == 8   # frames 1-4, both cameras
    assert got("val") == expected("val") == []                                 # no val line of the drive on disk
    report = json.loads(Path("metrics/filter.json").read_text())
    listed = 39810 + 4424
    in_drive = sum(1 for p in ("train", "val") for line in
                   (REPO / "psdif/splits/eigen_zhou" / f"{p}_files.txt").read_text().splitlines()
                   if line.startswith(DRIVE + " "))
    assert report["listed_train"] == 39810 and report["listed_val"] == 4424 and report["drop_static"] is False
    assert report["dropped"] == {"drive not on disk": listed - in_drive,
                                 "frame or a neighbour not on disk": in_drive - 8, "static": 0}
    assert report["static_listed"] == 2 and report["train_lines"] == 8       # frame 2 (l, r): counted, kept
    assert "static_true" not in report                                        # no generator ground truth


def test_fp32_by_default_with_tf32_convolutions_only():
    """set_precision: TF32 for cuDNN convolutions, never for matmuls (pixel coordinates); presets fp32."""
    from psdif.train import set_precision

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = False, True
        set_precision(torch.device("cuda"))  # only sets flags: runs without a GPU
        assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    for name in ("paper", "embedded"):
        assert config.load_params(config.preset_path(name)).train.amp is False


def test_readme_open_choices_table_quotes_the_paper_preset(paper):
    """Every `section.key: value` the README's "What the paper leaves open" table quotes is the preset's value,
    so the table cannot drift from psdif/presets/paper.yaml."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## What the paper leaves open"):]
    table = table[:table.index("\n## ")]
    quoted = re.findall(r"`([a-z_]+)\.([a-z_0-9]+): ([^`]+)`", table)
    assert len(quoted) >= 15, quoted
    raw = config.to_dict(paper)
    for section, key, value in quoted:
        assert section in raw and key in raw[section], f"README quotes unknown param {section}.{key}"
        assert raw[section][key] == yaml.safe_load(value), f"README: {section}.{key}: {value} vs preset {raw[section][key]}"
    assert "| choice | paper says | value taken | why |" in table
