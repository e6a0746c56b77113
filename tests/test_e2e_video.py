"""End to end on your own videos: `psdif preset video` and `dvc repro` in a temporary git repo, on clips written
here. First without a labeller and without depth GT (the non-semantic rows train and are scored photometrically,
the others say "not run" everywhere), then one `dvc exp run` that adds a labeller (a psdif teacher file) and the
depth GT: every row trains and the Eigen metrics appear. Slow (minutes); runs in CI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from psdif.reports import read_report
from psdif.variants import VARIANTS, needs_labels
from tests.test_e2e import BIN, _merge, _run
from tests.project import copy_tracked
from tests.test_video import frames, write_mp4
from tests.test_video_source import camera_yaml, depth_of

pytestmark = pytest.mark.slow
W, H = 96, 64
TINY = {
    "data": {"height": 64, "width": 96},
    "video": {"val_fraction": 0.0},
    "pseudolabel": {"batch_size": 4},
    "train": {"epochs": 1, "max_steps": 3, "batch_size": 2, "checkpoint_every": 2, "log_every": 1},
    "eval": {"batch_size": 4, "figure_frames": [0, 1]},
}


def write_inputs(root: Path) -> dict:
    """Three clips (one held out), a camera file, depth GT, and a teacher file of psdif's own format."""
    from psdif.camera import Camera
    from psdif.semantics.teacher import build_teacher, save_teacher

    clips, gt = root / "clips", root / "gt"
    clips.mkdir(parents=True)
    for c in range(3):
        write_mp4(clips / f"clip{c}.mp4", frames(10, scene=0, w=W, h=H), fps=10)
        (gt / f"clip{c}").mkdir(parents=True)
        for k in range(10):
            np.save(gt / f"clip{c}" / f"{k:010d}.npy", depth_of(k))
    cam = camera_yaml(root / "camera.yaml", Camera(80.0, 80.0, 47.5, 31.5, W, H))
    teacher = root / "teacher.pt"
    save_teacher(build_teacher("tu-regnetx_002", 19, 16, seed=0), teacher)
    return {"clips": clips, "camera": cam, "gt": gt, "teacher": teacher}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e_video")
    inputs = write_inputs(base / "inputs")
    dest = copy_tracked(base / "psdif")
    _run(["git", "init", "-q"], dest)
    _run([str(BIN / "psdif"), "preset", "video", "--videos", str(inputs["clips"]), "--camera", str(inputs["camera"]),
          "--test-clips", "clip2.mp4", "--force"], dest)
    params = _merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "video"], dest)
    _run([str(BIN / "dvc"), "repro"], dest, timeout=1500)
    return dest, inputs


def test_without_labeller_or_gt_the_plain_rows_run_and_the_others_say_why(project):
    dest, _ = project
    for name, variant in VARIANTS.items():
        row = read_report(dest / "metrics" / "eval" / f"{name}.json")
        if needs_labels(variant):
            assert "no labeller" in row["not_run"] and row["abs_rel"] is None
        else:  # scored photometrically on the held-out clip's frames with both neighbours
            photo = row["photometric"]
            assert row["protocol"] == "photometric" and row["abs_rel"] is None
            assert photo["n_images"] == 8 and photo["n_skipped"] == 0
            assert 0 < photo["photo_err"] and 0 < photo["photo_err_identity"]
    summary = json.loads((dest / "metrics" / "summary.json").read_text())
    assert set(summary) == {"base", "msfan"} and all("photo_err" in r for r in summary.values())
    table = (dest / "metrics" / "tables" / "table3.md").read_text()
    assert "full: not run (no labeller" in table and "photo err" in table and "n/a (no GT labels)" in table
    assert (dest / "metrics" / "figures" / "depth_video.mp4").stat().st_size > 0
    report = json.loads((dest / "metrics" / "filter.json").read_text())
    assert set(report["static_by_clip"]) == {"clip0.mp4", "clip1.mp4"}
    r = _run([str(BIN / "psdif"), "predict", str(project[1]["clips"] / "clip0.mp4"), "--model",
              "models/full/seed0/model.pt", "--out", "depth"], dest, check=False)
    assert r.returncode != 0 and "was not trained" in r.stderr
    status = _run([str(BIN / "dvc"), "status"], dest).stdout
    assert "train_" not in status and "evaluate_" not in status  # nothing left to run


def test_adding_a_labeller_and_gt_trains_every_row(project):
    dest, inputs = project
    _run([str(BIN / "dvc"), "exp", "run", "-S", f"pseudolabel.checkpoint={inputs['teacher']}",
          "-S", f"video.gt_depth={inputs['gt']}", "-S", "data.test_protocol=eigen_benchmark"], dest, timeout=1500)
    for name in VARIANTS:
        row = read_report(dest / "metrics" / "eval" / f"{name}.json")
        assert "not_run" not in row and row["protocol"] == "eigen_benchmark"
        assert math.isfinite(row["abs_rel"]) and row["n_images"] == 10  # every test frame has GT
        assert row["photometric"]["n_images"] == 8  # the first and last frame have one neighbour
    labels = json.loads((dest / "data" / "manifests" / "pseudolabels.json").read_text())
    assert "labeller" not in labels  # labelled by the teacher file, not the void label
