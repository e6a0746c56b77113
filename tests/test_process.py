"""Stage processes (psdif.process): they die with their parent, end Ctrl-C / SIGTERM with one line and exit
130 / 143, keep two runs out of one folder, and log timestamped lines and progress without a terminal.

Each test runs real processes: a stage-like child through the shared stage entry, a tiny training run, the
filter stage on the real KITTI sample. Nothing asserts how fast: a deadline only bounds a wait."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from psdif.data import kitti
from psdif.process import TimedProgress

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead, waiting for a reaper that may not exist in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _wait_gone(pid: int, deadline_s: float = 60.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return _gone(pid)


# a stage-like child: the real stage entry (stage_args, as stages/*.py call it), then a long wait
CHILD = ("import sys, time\n"
         "sys.argv = ['stages/probe.py', '--params', {params!r}]\n"
         "from psdif.stage import stage_args\n"
         "stage_args('probe')\n"
         "print('ready', flush=True)\n"
         "time.sleep(600)\n")
# its parent (standing in for `dvc repro`): starts the child, says its PID once it is ready, then waits
PARENT = ("import subprocess, sys, time\n"
          "child = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE,"
          " stderr=open({err!r}, 'w'), text=True)\n"
          "assert child.stdout.readline().endswith('probe: ready\\n')\n"
          "print(child.pid, flush=True)\n"
          "time.sleep(600)\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the child go")
def test_a_stage_dies_with_its_parent_saying_so_in_one_line(tmp_path):
    err = tmp_path / "child.err"
    child = CHILD.format(params=str(REPO / "params.yaml"))
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(child=child, err=str(err))], cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.kill()  # SIGKILL: the parent gets no chance to stop its child itself
        parent.wait()
        assert _wait_gone(pid), f"stage process {pid} outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if pid is not None and not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    lines = err.read_text().splitlines()
    assert len(lines) == 1 and "Traceback" not in err.read_text(), lines
    assert re.fullmatch(rf"{STAMP} probe: interrupted by SIGTERM: files finished so far are kept .*"
                        r"rerun `dvc repro` to resume", lines[0]), lines


def test_sigterm_ends_a_stage_with_exit_143_and_one_line(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(params=str(REPO / "params.yaml"))], cwd=REPO,
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().endswith("probe: ready\n")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert len(err.splitlines()) == 1 and "interrupted by SIGTERM" in err and "Traceback" not in err, err


def sigint_child(args_json: str) -> None:
    """A tiny training run (tests/test_train.py's) in a stage process that gets SIGINT at its 10th step."""
    from psdif.process import start_stage
    from tests.test_train import StandInLoss, run_standin

    args = json.loads(args_json)
    # as from a terminal: a test run started in the background (`cmd &`) inherits SIGINT ignored, which a stage
    # rightly keeps (`nohup dvc repro &` asks for it); Ctrl-C at a terminal reaches Python's own handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start_stage("train")
    import torch

    torch.set_num_threads(1)
    loss = StandInLoss()

    def interrupted_at_10(*a):
        if loss.calls + 1 == 10:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the handler raises in this thread right here
        return loss(*a)

    run_standin(Path(args["root"]), Path(args["out"]), loss=interrupted_at_10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from psdif.data.kitti import write_split
    from tests.test_data import targets, write_tiny_kitti

    root = tmp_path_factory.mktemp("process_kitti")
    write_tiny_kitti(root, frames=range(0, 15), sides=("l",))
    write_split(root / "splits" / "tiny" / "train_files.txt", targets(range(1, 14)))
    return root


def test_ctrl_c_in_training_keeps_the_last_checkpoint_and_says_so_in_one_line(tiny, tmp_path):
    """13 frames, batch 2, checkpoint every 4 steps (tests/test_train.py's tiny run): SIGINT at step 10 leaves
    the checkpoint of step 8, and the one line names it; exit 130, no traceback."""
    import torch

    out = tmp_path / "run"
    args = json.dumps({"root": str(tiny), "out": str(out)})
    cmd = [sys.executable, "-c", f"from tests.test_process import sigint_child; sigint_child({args!r})"]
    r = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 130, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    said = [line for line in r.stderr.splitlines() if "interrupted" in line]
    assert said == [f"{said[0][:19]} train: interrupted by Ctrl-C (SIGINT): the checkpoint {out / 'last.pt'} "
                    "at step 8 of 18 is kept; rerun `dvc repro` to resume from it"], r.stderr[-3000:]
    assert re.fullmatch(STAMP, said[0][:19])
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 8
    assert not (out / "model.pt").exists()


def test_timed_progress_lines_say_done_total_rate_and_eta(capsys):
    """A clock the test moves: 3 of 10 frames in 6 s -> 0.5 frames/s, 7 left -> ETA 14 s; one line per interval."""
    now = [100.0]
    bar = TimedProgress(total=10, desc="prepare", unit="frame", every=5.0, clock=lambda: now[0])
    for t in (101.0, 103.0, 106.0):  # only the update at t = 106 comes 5 s or more after the start
        now[0] = t
        bar.update(1)
    assert capsys.readouterr().err == "prepare: 3/10 frame (30 %), 0.5 frame/s, ETA 14 s, 6 s elapsed\n"


def test_the_filter_stage_logs_stamped_lines_progress_a_summary_and_why_val_is_empty(kitti_mini, tmp_path,
                                                                                     monkeypatch):
    """stages/filter.py on the real sample (drive 0001), eigen_zhou lists, stdout and stderr pipes (no TTY),
    PSDIF_PROGRESS_SECONDS=0 (a line at every update): every line is timestamped, a progress line counts the
    drives done / total with rate and ETA, the report is one line, and the empty validation list is explained
    with the counts of the list it read (none of its 4,424 lines is of a drive on disk)."""
    from tests.kitti_copy import DRIVE, paper_params, run_stage

    raw = tmp_path / "kitti"
    shutil.copytree(kitti_mini / "2011_09_26", raw / "2011_09_26")
    splits = tmp_path / "splits"
    (splits / "mine").mkdir(parents=True)
    (splits / "eigen_zhou").symlink_to(REPO / "psdif" / "splits" / "eigen_zhou")
    (splits / "mine" / "test_files.txt").write_text(f"{DRIVE} 5 l\n")
    project = tmp_path / "project"
    project.mkdir()
    params = paper_params(data={"raw_root": str(raw), "splits_dir": str(splits), "train_split": "eigen_zhou",
                                "test_split": "mine", "num_workers": 0}, train={"batch_size": 8})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("PSDIF_PROGRESS_SECONDS", "0")
    r = run_stage("filter", project)

    val_file = splits / "eigen_zhou" / "val_files.txt"
    val = kitti.read_split(val_file)
    # the reference, from the list text and a directory listing: why each val line cannot be kept
    present = {s: {int(p.stem) for p in (raw / DRIVE / f"image_0{kitti.SIDE_TO_CAM[s]}" / "data").glob("*.png")}
               for s in "lr"}
    why = ["drive not on disk" if f.folder != DRIVE else "frame or a neighbour not on disk"
           if not {f.frame - 1, f.frame, f.frame + 1} <= present[f.side] else "kept" for f in val]
    counts = {w: why.count(w) for w in dict.fromkeys(why)}
    assert len(val) == 4424 and "kept" not in counts
    lines = (r.stdout + r.stderr).splitlines()
    assert lines and all(re.match(rf"{STAMP} filter: ", line) for line in lines), lines
    drives = len({f.folder for f in kitti.read_split(splits / "eigen_zhou" / "train_files.txt") + val})
    progress = [line for line in lines if re.search(rf"filter: filter: \d+/{drives} drive \(\d+ %\), "
                                                    r"[\d.e+]+ drive/s, ETA \d", line)]
    assert progress, lines
    kept = len(kitti.read_split(project / "data" / "lists" / "train_files.txt"))
    summary = r.stdout.splitlines()
    assert len(summary) == 1 and f"filter: kept {kept} of 39810 train lines and 0 of 4424 val lines" in summary[0]
    warning = [line for line in lines if "warning" in line]
    dropped = ", ".join(f"{n} {w}" for w, n in counts.items())
    expected = (f"filter: warning: data/lists/val_files.txt has no line: all 4424 lines of {val_file.resolve()} were "
                f"dropped ({dropped}), e.g. {val[0].line()} ({why[0]}); nothing is validated on it (no validation mIoU "
                "in the pretrain stage)")
    assert warning == [f"{warning[0][:19]} {expected}"], warning
