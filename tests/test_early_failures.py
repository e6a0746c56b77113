"""Fail before the expensive part: with the published lists and only some drives on disk, the filter stage
(it runs before pseudolabel, pretrain and every train stage) stops in seconds, one ``error:`` line per
problem and no traceback, when the kept training frames cannot fill one batch or when no test frame can be
evaluated; each line names the counts and the fix. The expectations are derived here from the list files
and a directory listing of the KITTI sample."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import yaml

from psdif.data import kitti
from tests.kitti_copy import DRIVE, REPO, paper_params, run_stage, write_lists

SPLITS = REPO / "psdif" / "splits"


def _project(tmp_path: Path, raw_root: Path, test_split="eigen", splits_dir=SPLITS, **sections) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    data = {"raw_root": str(raw_root), "splits_dir": str(splits_dir), "train_split": "eigen_zhou",
            "test_split": test_split, "num_workers": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(paper_params(data=data, **sections), sort_keys=False))
    return project


def _errors(r) -> list[str]:
    assert "Traceback" not in r.stderr, r.stderr
    return [line for line in r.stderr.splitlines() if line.startswith("error: ")]


def _trainable_lines(raw: Path) -> int:
    """Lines of eigen_zhou (train and val: the copy holds no val line of its drive) whose frame and both
    neighbours are on disk for the line's camera: what the filter keeps (the preset keeps static frames)."""
    present = {s: {int(p.stem) for p in (raw / DRIVE / f"image_0{kitti.SIDE_TO_CAM[s]}" / "data").glob("*.png")}
               for s in "lr"}
    n = 0
    for part in ("train", "val"):
        for line in (SPLITS / "eigen_zhou" / f"{part}_files.txt").read_text().splitlines():
            folder, frame, side = line.split()
            n += folder == DRIVE and {int(frame) - 1, int(frame), int(frame) + 1} <= present[side]
    return n


def _splits_with(tmp_path: Path) -> Path:
    """A splits folder holding the published eigen_zhou lists (linked) beside a test split of ours."""
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "eigen_zhou").symlink_to(SPLITS / "eigen_zhou")
    return splits


def _list_counts(path: Path) -> tuple[int, int]:
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return len(lines), len({parts[0] for parts in lines})


def test_published_lists_with_one_drive_and_the_preset_batch_stop_in_the_filter(copy, tmp_path):
    """The issue's run: paper preset (batch 12), eigen_zhou / eigen, only the sample's drive on disk. The old
    code wrote the lists and the run failed with a traceback inside train_baseline@0, after pseudo-labelling
    and pretraining; now the filter stops, naming the frame count, the batch, the fix and the drive counts,
    and also that no eigen test frame is on disk (every problem at once)."""
    project = _project(tmp_path, copy)
    batch = yaml.safe_load((project / "params.yaml").read_text())["train"]["batch_size"]
    kept = _trainable_lines(copy)
    assert batch == 12 and 0 < kept < batch  # the preset's batch; the "8 training frames"
    run_stage("download", project)
    start = time.perf_counter()
    r = run_stage("filter", project, check=False)
    seconds = time.perf_counter() - start
    errors = _errors(r)
    assert r.returncode == 2 and len(errors) == 2, r.stderr
    n_train_drives = len({line.split()[0] for part in ("train", "val")
                          for line in (SPLITS / "eigen_zhou" / f"{part}_files.txt").read_text().splitlines()})
    assert errors[0] == (f"error: {kept} training frames on disk (1 of the {n_train_drives} drives of "
                         f"{SPLITS / 'eigen_zhou'} present) give no full batch of {batch}: lower train.batch_size "
                         f"to {kept} (`dvc exp run -S train.batch_size={kept}`) or put more drives in {copy}")
    n_test, test_drives = _list_counts(SPLITS / "eigen" / "test_files.txt")
    assert f"none of the {n_test} test frames of {SPLITS / 'eigen' / 'test_files.txt'} is on disk" in errors[1]
    assert f"(0 of {test_drives} test drives present under {copy}" in errors[1]
    assert not (project / "data/lists/train_files.txt").exists()  # nothing for pseudolabel / train to start on
    assert (project / "metrics/filter.json").is_file()             # the report says what was kept and dropped
    assert seconds < 60, seconds


def test_a_test_list_with_no_frame_on_disk_stops_in_the_filter(copy, tmp_path):
    """A batch the kept frames fill, and a test list whose frames are not on disk: the old code trained the
    first variant and only then export_gt stopped; now the filter stops naming the test list and its counts,
    with the very message export_gt gives (one function decides what can be evaluated)."""
    kept = _trainable_lines(copy)
    project = _project(tmp_path, copy, train={"batch_size": kept})
    run_stage("download", project)
    r = run_stage("filter", project, check=False)
    errors = _errors(r)
    n_test, test_drives = _list_counts(SPLITS / "eigen" / "test_files.txt")
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert errors[0].startswith(f"error: none of the {n_test} test frames of {SPLITS / 'eigen' / 'test_files.txt'}"
                                f" is on disk with its image, velodyne scan and calibration (0 of {test_drives} "
                                f"test drives present under {copy}"), errors[0]
    assert "data.test_split" in errors[0] and "download.fetch: missing" in errors[0]
    assert not (project / "data/lists/train_files.txt").exists()
    r_gt = run_stage("export_gt", project, check=False)
    assert r_gt.returncode != 0 and _errors(r_gt) == errors


def test_a_test_list_on_a_present_drive_without_its_frames_stops_in_the_filter(copy, tmp_path):
    """The test drive is on disk, its listed frames are not (one image absent, one camera-3 frame absent)."""
    splits = _splits_with(tmp_path)
    absent = [f"{DRIVE} 30 l", f"{DRIVE} 25 r"]
    assert not (copy / DRIVE / "image_02/data/0000000030.png").exists()
    assert not (copy / DRIVE / "image_03/data/0000000025.png").exists()
    write_lists(splits / "mine", test=absent)
    project = _project(tmp_path, copy, test_split="mine", splits_dir=splits, train={"batch_size": 2})
    run_stage("download", project)
    r = run_stage("filter", project, check=False)
    errors = _errors(r)
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert errors[0].startswith(f"error: none of the 2 test frames of {splits / 'mine' / 'test_files.txt'} is on "
                                f"disk with its image, velodyne scan and calibration (1 of 1 test drives present "
                                f"under {copy}; first: {absent[0]} (image not on disk))"), errors[0]
    # one frame the copy has: the filter passes and writes the lists
    write_lists(splits / "mine", test=absent + [f"{DRIVE} 5 l"])
    run_stage("filter", project)
    assert (project / "data/lists/train_files.txt").read_text().count("\n") == _trainable_lines(copy)


def _filter_stage():
    spec = importlib.util.spec_from_file_location("filter_stage", REPO / "stages" / "filter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("nproc,nnodes,batch,ok", [("4", None, 8, True), ("3", None, 8, False),
                                                   ("2", "2", 6, False), ("2", "2", 12, False)])
def test_the_global_batch_is_checked_against_the_processes_of_the_launch(copy, tmp_path, monkeypatch, capsys,
                                                                         nproc, nnodes, batch, ok):
    """train.batch_size is the global batch split over PSDIF_NPROC x PSDIF_NNODES processes (psdif.distributed):
    the filter checks that it divides evenly and that the kept frames fill it."""
    from psdif.distributed import torchrun_command

    monkeypatch.setenv("PSDIF_NPROC", nproc)
    if nnodes:
        monkeypatch.setenv("PSDIF_NNODES", nnodes)
        monkeypatch.setenv("PSDIF_RDZV_ENDPOINT", "node0:29500")
        monkeypatch.setenv("PSDIF_NODE_RANK", "0")
    else:
        monkeypatch.delenv("PSDIF_NNODES", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    cmd = torchrun_command("stages/train.py", [])  # the launcher's own count of processes
    per_node = int(next(a for a in cmd if a.startswith("--nproc-per-node=")).split("=")[1])
    nodes = int(next((a for a in cmd if a.startswith("--nnodes=")), "--nnodes=1").split("=")[1])
    world, kept = per_node * nodes, _trainable_lines(copy)
    splits = _splits_with(tmp_path)
    write_lists(splits / "mine", test=[f"{DRIVE} 5 l"])
    project = _project(tmp_path, copy, test_split="mine", splits_dir=splits, train={"batch_size": batch})
    run_stage("download", project)
    monkeypatch.chdir(project)
    assert ok == (batch % world == 0 and kept >= batch)
    if ok:
        _filter_stage().main([])
        assert Path("data/lists/train_files.txt").is_file()
        return
    with pytest.raises(SystemExit) as exc:
        _filter_stage().main([])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exc.value.code == 2 and len(errors) == 1, errors
    if batch % world:
        assert errors[0] == (f"error: train.batch_size={batch} must be divisible by the {world} training processes "
                             f"(PSDIF_NPROC x PSDIF_NNODES): set train.batch_size to a multiple of {world}")
    else:
        lower = kept // world * world
        assert errors[0].startswith(f"error: {kept} training frames on disk") and \
            f"no full batch of {batch}: lower train.batch_size to {lower} " in errors[0], errors[0]


def test_the_filter_runs_before_every_stage_that_labels_or_trains_and_follows_the_batch():
    """In dvc.yaml every stage that labels or trains reads the filter's train list (or an output of a stage
    that does), and the filter depends on train.batch_size, so a changed batch is checked again."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = {name: {next(iter(o)) if isinstance(o, dict) else o for o in s.get("do", s).get("outs", [])}
            for name, s in stages.items()}

    def after_filter(name: str, seen=()) -> bool:
        deps = stages[name].get("do", stages[name])["deps"]
        if {"data/lists/train_files.txt", "data/lists"} & set(deps):  # the train list, or the folder holding it
            return True
        return any(after_filter(other, seen + (name,)) for other, made in outs.items()
                   if other not in seen and any(d == m or d.startswith(m + "/") for d in deps for m in made))
    heavy = ["pseudolabel", "pretrain", *(n for n in stages if n.startswith("train_"))]
    assert len(heavy) > 3 and all(after_filter(n) for n in heavy), heavy
    assert "train.batch_size" in stages["filter"]["params"]
