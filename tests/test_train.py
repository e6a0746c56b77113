"""psdif.train: exact resume after SIGKILL, stale-checkpoint refusal, NaN stop, DDP = one process,
and a short run of the real networks and losses. Small stand-in networks keep the loop tests fast."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from psdif.config import default_params
from psdif.data.kitti import write_split
from psdif.train import NonFiniteLossError, StaleCheckpointError, train
from psdif.variants import get_variant
from tests.test_data import targets, write_tiny_kitti

REPO = Path(__file__).resolve().parents[1]
H, W = 32, 64


# ------------------------------------------------------------------------------------------ stand-ins

@dataclass
class TinyOut:
    disparities: list
    seg_logits: None = None
    features: dict = dataclasses.field(default_factory=dict)


class TinyDepth(nn.Module):
    """images [B, 3, H, W] -> 4 sigmoid disparities at 1/2^s (no BatchNorm: DDP-comparable)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout2d(dropout)
        self.heads = nn.ModuleList(nn.Conv2d(8, 1, 3, padding=1) for _ in range(4))

    def forward(self, x):
        f = self.drop(F.elu(self.conv1(x)))
        return TinyOut([torch.sigmoid(h(F.avg_pool2d(f, 2 ** s) if s else f)) for s, h in enumerate(self.heads)])


class TinyPose(nn.Module):
    """pair [B, 6, H, W] -> (axisangle [B, 1, 3], translation [B, 1, 3])."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(6, 8, 3, stride=4, padding=1)
        self.fc = nn.Linear(8, 6)

    def forward(self, pair):
        out = 0.01 * self.fc(F.relu(self.conv(pair)).mean((2, 3)))
        return out[:, None, :3], out[:, None, 3:]


@dataclass
class Terms:
    total: torch.Tensor
    photometric: torch.Tensor
    pose: torch.Tensor


def make_builder(dropout: float):
    def build(variant, model_cfg):
        return TinyDepth(dropout), TinyPose()
    return build


class StandInLoss:
    """A mean-over-batch loss touching every output; ``noise`` uses the torch RNG (like the automask tie-break).

    kill_at: SIGKILL this process when called for that step; nan_at: put a NaN in that step's batch.
    """

    def __init__(self, noise: bool = True, kill_at=None, nan_at=None, on_nan=None, nan_grad_at=None):
        self.calls, self.noise, self.kill_at, self.nan_at, self.on_nan = 0, noise, kill_at, nan_at, on_nan
        self.nan_grad_at = nan_grad_at

    def __call__(self, out, batch, poses, loss_cfg, variant, z, min_depth, max_depth):
        self.calls += 1
        if self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        images = batch.images
        if self.calls == self.nan_at:
            images = images.clone()
            images[0, 0, 0, 0, 0] = float("nan")
            if self.on_nan:
                self.on_nan()
        grey = images[:, 0].mean(1, keepdim=True)
        photo = torch.stack([(F.interpolate(d, size=grey.shape[-2:], mode="bilinear") - grey).abs().mean()
                             for d in out.disparities]).mean()
        if self.noise:
            photo = photo + 1e-3 * (torch.randn_like(grey) * grey).mean()
        pose = sum((poses[i][:, :3, 3] - 0.1 * i).pow(2).mean() for i in (-1, 1))
        total = photo + pose
        if self.calls == self.nan_grad_at:  # finite value, NaN gradient: 0 * d sqrt(x)/dx at x = 0
            total = total + 0 * torch.sqrt(out.disparities[0].sum() * 0)
        return Terms(total=total, photometric=photo, pose=pose)


# ------------------------------------------------------------------------------------------ setup

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_kitti")
    raw, labels, boundary = write_tiny_kitti(root, frames=range(0, 15), sides=("l",))
    write_split(root / "splits" / "tiny" / "train_files.txt", targets(range(1, 14)))  # 13 frames
    return root


def tiny_params(root: Path, **train_kw):
    p = default_params()
    data = replace(p.data, raw_root=str(root / "raw"), splits_dir=str(root / "splits"), train_split="tiny",
                   height=H, width=W, num_workers=0, intrinsics="calib")
    tc = dict(seeds=[5], epochs=3, max_steps=None, batch_size=2, lr=1e-3, lr_step_epochs=1, lr_gamma=0.5,
              checkpoint_every=4, log_every=2, amp=False, compile=False)
    tc.update(train_kw)
    return replace(p, data=data, train=replace(p.train, **tc))


def run_standin(root: Path, out: Path, loss=None, dropout=0.2, params=None, live_dir=None, on_step=None,
                **train_kw):
    params = params or tiny_params(root, **train_kw)
    return train(params, get_variant("baseline"), out, build_models=make_builder(dropout),
                 loss_fn=loss or StandInLoss(), progress=False, live_dir=live_dir, on_step=on_step)


def child_main(args_json: str) -> None:
    """Entry point of the subprocess runs (same thread settings as the in-process runs)."""
    args = json.loads(args_json)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    run_standin(Path(args["root"]), Path(args["out"]), loss=StandInLoss(kill_at=args.get("kill_at")),
                live_dir=args.get("live"))


@pytest.fixture
def deterministic():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def state_of(out: Path) -> dict:
    m = torch.load(out / "model.pt", weights_only=False)
    return {f"{k}.{n}": t for k in ("depth", "pose") for n, t in m[k].items()}


# ------------------------------------------------------------------------------------------ tests

def test_resume_after_sigkill_is_exact(tiny, tmp_path, deterministic):
    """13 frames, batch 2 -> 6 steps/epoch, 3 epochs; SIGKILL at step 10 (last checkpoint: step 8 = epoch 1,
    batch 2, mid-epoch); the restarted run ends with exactly the weights (and logs) of an unbroken run."""
    ref = tmp_path / "ref"
    run_standin(tiny, ref)

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = json.dumps({"root": str(tiny), "out": str(out), "kill_at": 10})
    cmd = [sys.executable, "-c", f"from tests.test_train import child_main; child_main({args!r})"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch"]) == (8, 1, 2)
    assert not (out / "model.pt").exists()
    assert not list(out.glob(".*.tmp"))

    run_standin(tiny, out)  # restart: resumes from step 8
    a, b = state_of(ref), state_of(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.load(out / "model.pt", weights_only=False)["step"] == 18
    # the logged curves match too (rows logged after the checkpoint by the killed run were dropped)
    for name in ("total", "photometric", "lr"):
        ref_rows = (ref / "dvclive" / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().splitlines()
        res_rows = (out / "dvclive" / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().splitlines()
        assert [r.split("\t")[:2] for r in ref_rows] == [r.split("\t")[:2] for r in res_rows]
        assert len(ref_rows) == 1 + 18 // 2
    lr_rows = (ref / "dvclive" / "plots" / "metrics" / "train" / "lr.tsv").read_text().splitlines()
    lr = [float(r.split("\t")[-1]) for r in lr_rows[1:]]
    assert lr[0] == 1e-3 and lr[-1] == 1e-3 * 0.5 ** 2  # StepLR: x0.5 after each epoch


def _curves(live: Path) -> dict:
    return {p.name: [r.split("\t")[:2] for r in p.read_text().splitlines()]
            for p in sorted((live / "plots" / "metrics" / "train").glob("*.tsv"))}


def test_live_folder_outside_the_run_is_written_as_it_goes_and_restored_on_resume(tiny, tmp_path, deterministic):
    """The train stage's DVCLive folder is its own output (dvclive/<variant>/seed<k>), which DVC deletes before
    the stage runs: the curves are in it while the run goes on, the run folder keeps a copy with each
    checkpoint, and a run killed at step 10 and resumed (its live folder deleted, as DVC does) ends with the
    curves of an unbroken run."""
    ref, ref_live = tmp_path / "ref", tmp_path / "ref_live"
    seen = {}

    def watch(step, nets):  # the rows logged so far are on disk in the live folder during the run
        tsv = ref_live / "plots" / "metrics" / "train" / "total.tsv"
        seen[step] = len(tsv.read_text().splitlines()) - 1 if tsv.exists() else 0
    run_standin(tiny, ref, live_dir=ref_live, on_step=watch)
    assert seen[3] == 1 and seen[9] == 4  # log_every 2: steps 2 / 2, 4, 6, 8 logged before steps 3 / 9
    assert _curves(ref / "dvclive") == _curves(ref_live)  # the finished run's copy, for a later reuse
    assert len(_curves(ref_live)["total.tsv"]) == 1 + 18 // 2

    out, live = tmp_path / "killed", tmp_path / "live"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = json.dumps({"root": str(tiny), "out": str(out), "kill_at": 10, "live": str(live)})
    cmd = [sys.executable, "-c", f"from tests.test_train import child_main; child_main({args!r})"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert len(_curves(out / "dvclive")["total.tsv"]) == 1 + 8 // 2  # the copy of the step-8 checkpoint
    assert len(_curves(live)["total.tsv"]) == 1 + 8 // 2  # (step 10 was killed before its log)
    shutil.rmtree(live)  # dvc repro deletes the stage's outputs before running it
    run_standin(tiny, out, live_dir=live)
    assert _curves(live) == _curves(ref_live)
    assert _curves(out / "dvclive") == _curves(ref_live)


class Interrupt(Exception):
    pass


def test_checkpoint_from_other_params_is_refused(tiny, tmp_path):
    """An interrupted run's last.pt is refused under other params; a completed run leaves none behind."""
    out = tmp_path / "run"

    def interrupted_loss(*args):
        if loss.calls == 3:
            raise Interrupt
        return loss(*args)
    loss = StandInLoss()
    with pytest.raises(Interrupt):
        run_standin(tiny, out, loss=interrupted_loss, checkpoint_every=2)
    with pytest.raises(StaleCheckpointError) as err:
        run_standin(tiny, out, lr=5e-4, checkpoint_every=2)
    msg = str(err.value)
    assert str(out / "last.pt") in msg and "train.lr: 0.001 -> 0.0005" in msg and "delete" in msg
    result = run_standin(tiny, out, checkpoint_every=2, max_steps=None)  # same params: resumes and completes
    assert result.steps == 18 and (out / "model.pt").exists() and not (out / "last.pt").exists()
    assert set(result.final_losses) == {"total", "photometric", "pose"}
    run_standin(tiny, out, lr=5e-4, checkpoint_every=2, max_steps=1)  # other params now start fresh


def test_nan_stops_training_and_keeps_last_checkpoint(tiny, tmp_path):
    """NaN in the batch of step 5 on the CPU: the run stops before that step's backward (a NaN warp's
    backward can crash the CPU kernel), names step 5 and the terms, and last.pt (step 4) is byte-identical."""
    out = tmp_path / "nan"
    snapshot = {}
    loss = StandInLoss(nan_at=5, on_nan=lambda: snapshot.setdefault("bytes", (out / "last.pt").read_bytes()))
    with pytest.raises(NonFiniteLossError) as err:
        run_standin(tiny, out, loss=loss, checkpoint_every=2, log_every=4)
    msg = str(err.value)
    assert "step 5" in msg and "total=nan" in msg and "photometric=nan" in msg and "pose=" in msg
    assert str(out / "last.pt") in msg
    assert loss.calls == 5  # caught before the backward of step 5
    assert (out / "last.pt").read_bytes() == snapshot["bytes"]
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 4
    assert not (out / "model.pt").exists()


def test_guard_records_on_the_device_and_reports_at_the_next_check():
    """The GPU path: record() keeps the FIRST non-finite step and its terms without a host sync; check() raises."""
    from psdif.checkpoint import NonFiniteGuard

    guard = NonFiniteGuard(torch.device("cpu"))
    for step, total in ((1, 1.0), (2, float("nan")), (3, float("inf")), (4, 2.0)):
        guard.record(step, {"total": torch.tensor(total), "ce": torch.tensor(0.5)})
    with pytest.raises(NonFiniteLossError, match=r"step 2 \(rank 0\): total=nan, ce=0.5; training stopped, here"):
        guard.check(None, "here")
    clean = NonFiniteGuard(torch.device("cpu"))
    clean.record(1, {"total": torch.tensor(1.0)})
    clean.check([torch.ones(3)], "here")  # nothing to report
    with pytest.raises(NonFiniteLossError, match="non-finite weights after step 7"):
        clean.check([torch.tensor([1.0, float("inf")])], "here", step=7)


def test_nan_gradient_never_reaches_a_checkpoint(tiny, tmp_path):
    """A finite loss with a NaN gradient at step 4 (a checkpoint step): the weights check refuses to save."""
    out = tmp_path / "nangrad"
    with pytest.raises(NonFiniteLossError, match="non-finite weights after step 4"):
        run_standin(tiny, out, loss=StandInLoss(nan_grad_at=4), checkpoint_every=2, log_every=10)
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 2


def _ddp_worker(rank: int, world: int, root: str, out: str, port: int, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    nets = run_standin(Path(root), Path(out), loss=StandInLoss(noise=False), dropout=0.0, max_steps=1,
                       batch_size=4).networks
    torch.save({n: p.grad.clone() for n, p in nets.named_parameters()}, f"{result}.{rank}")


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one_process(tiny, tmp_path):
    """Global batch 4: 2 gloo processes x 2 items give the same first-step gradients as 1 process x 4."""
    import torch.multiprocessing as mp
    result = str(tmp_path / "grads")
    mp.spawn(_ddp_worker, args=(2, str(tiny), str(tmp_path / "ddp"), _free_port(), result), nprocs=2)
    torch.set_num_threads(1)
    single = run_standin(tiny, tmp_path / "single", loss=StandInLoss(noise=False), dropout=0.0, max_steps=1,
                         batch_size=4).networks
    g0, g1 = torch.load(f"{result}.0"), torch.load(f"{result}.1")
    for n, p in single.named_parameters():
        torch.testing.assert_close(g0[n], g1[n], rtol=0, atol=0)  # DDP: identical averaged gradients
        torch.testing.assert_close(g0[n], p.grad, rtol=1e-5, atol=1e-7)
    assert (tmp_path / "ddp" / "model.pt").exists()


def node_main(args_json: str) -> None:
    """One rank of the two-node test, started by torchrun (RANK, WORLD_SIZE, MASTER_* set by it)."""
    args = json.loads(args_json)
    torch.set_num_threads(1)
    run_standin(Path(args["root"]), Path(args["out"]), loss=StandInLoss(noise=False), dropout=0.0, max_steps=4,
                batch_size=4, checkpoint_every=2)


def test_two_nodes_of_two_processes_resume_a_one_process_run(tiny, tmp_path):
    """Global batch 4. One process trains 2 steps and stops after its checkpoint; then 2 "machines" x 2 gloo
    processes, launched as the train stage launches them (psdif.distributed.torchrun_command from PSDIF_NNODES,
    PSDIF_NPROC, PSDIF_NODE_RANK, PSDIF_RDZV_ENDPOINT: two torchrun agents, static rendezvous on this host),
    resume it to step 4. They say that the noise streams restart, only rank 0 writes (the same files as one
    process), and the weights equal an unbroken one-process run: the same samples in the same steps (no noise,
    no dropout; DDP averages the 4 per-rank gradients, so float rounding only)."""
    from psdif.distributed import torchrun_command

    ref = tmp_path / "ref"
    run_standin(tiny, ref, loss=StandInLoss(noise=False), dropout=0.0, max_steps=4, batch_size=4, checkpoint_every=2)
    out = tmp_path / "resumed"

    def stops_at_step_3(*a):
        if loss.calls == 2:
            raise Interrupt
        return loss(*a)
    loss = StandInLoss(noise=False)
    with pytest.raises(Interrupt):
        run_standin(tiny, out, loss=stops_at_step_3, dropout=0.0, max_steps=4, batch_size=4, checkpoint_every=2)
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 2

    script = tmp_path / "node.py"
    args = json.dumps({"root": str(tiny), "out": str(out)})
    script.write_text(f"from tests.test_train import node_main\nnode_main({args!r})\n")
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PSDIF_NNODES": "2", "PSDIF_NPROC": "2",
               "PSDIF_NODE_RANK": str(node), "PSDIF_RDZV_ENDPOINT": f"127.0.0.1:{port}"}
        env.pop("RANK", None)
        cmd = torchrun_command(str(script), [], env)
        assert cmd is not None and "--nnodes=2" in cmd and f"--node-rank={node}" in cmd
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-4000:]
    assert "written by 1 processes, resumed by 4" in logs[0] + logs[1]
    a, b = state_of(ref), state_of(out)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert torch.load(out / "model.pt", weights_only=False)["step"] == 4
    files = lambda d: sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file())  # noqa: E731
    assert files(out) == files(ref) and not (out / "last.pt").exists()


def test_torchrun_command_from_the_environment(monkeypatch):
    from psdif.distributed import torchrun_command

    for k in ("RANK", "PSDIF_NPROC", "PSDIF_NNODES", "PSDIF_NODE_RANK", "PSDIF_RDZV_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun_command("s.py", ["--variant", "full"]) is None  # one process: no relaunch
    monkeypatch.setenv("PSDIF_NPROC", "8")
    assert torchrun_command("s.py", ["--variant", "full"])[2:] == [
        "torch.distributed.run", "--nproc-per-node=8", "--standalone", "s.py", "--variant", "full"]
    monkeypatch.setenv("PSDIF_NNODES", "2")
    with pytest.raises(SystemExit, match="PSDIF_RDZV_ENDPOINT=<host of node 0>:<port>"):
        torchrun_command("s.py", [])
    monkeypatch.setenv("PSDIF_RDZV_ENDPOINT", "node0.cluster:29400")
    monkeypatch.setenv("PSDIF_NODE_RANK", "1")
    assert torchrun_command("s.py", [])[3:] == ["--nproc-per-node=8", "--nnodes=2", "--node-rank=1",
                                                "--master-addr=node0.cluster", "--master-port=29400", "s.py"]
    monkeypatch.setenv("RANK", "3")  # already under torchrun
    assert torchrun_command("s.py", []) is None


def test_training_from_prepared_frames_gives_the_same_weights(tiny, tmp_path, deterministic):
    """The loop fed from the prepare stage's arrays ends with exactly the weights of the loop fed from the PNGs
    (the same pixels, flips and jitter draws reach the step)."""
    from psdif.data.prepared import prepare_all

    frames = targets(range(1, 14))
    manifests = {k: tmp_path / f"prepared_{k}.json" for k in ("images", "labels", "boundaries")}
    prepare_all(str(tiny / "raw"), str(tiny / "labels"), str(tiny / "boundaries"), "png", H, W, frames,
                tmp_path / "prepared", manifests, {k: "x" for k in manifests}, workers=1, progress=False)
    png = run_standin(tiny, tmp_path / "png", max_steps=5)
    params = tiny_params(tiny, max_steps=5)
    prep = train(params, get_variant("baseline"), tmp_path / "prep", build_models=make_builder(0.2),
                 loss_fn=StandInLoss(), progress=False, prepared=manifests)
    assert png.steps == prep.steps == 5
    for k, v in state_of(tmp_path / "png").items():
        assert torch.equal(v, state_of(tmp_path / "prep")[k]), k


def test_loader_workers_from_the_machine(monkeypatch):
    from psdif.config import ParamsError, parse_params, to_dict
    from psdif.distributed import loader_workers
    from psdif.io import cpu_count

    assert loader_workers(3, cuda=True) == 3 and loader_workers(0, cuda=True) == 0
    assert loader_workers("auto", cuda=False) == 0  # the CPU's cores run the step
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert loader_workers("auto", cuda=True) == max(1, cpu_count() - 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cpu_count()))  # more processes than cores: one each
    assert loader_workers("auto", cuda=True) == 1
    raw = to_dict(default_params())
    raw["data"]["num_workers"] = "auto"
    assert parse_params(raw).data.num_workers == "auto"
    raw["data"]["num_workers"] = "many"
    with pytest.raises(ParamsError, match="data.num_workers"):
        parse_params(raw)


def test_real_networks_and_losses_full_variant(tmp_path):
    """Two steps of the real 'full' variant (MSFAN tiny + PSDIFM + all losses) on the tiny dataset."""
    raw, labels, boundary = write_tiny_kitti(tmp_path, frames=range(0, 6), sides=("l",))
    p = default_params()
    p = replace(p, model=replace(p.model, encoder_weights=None, pose_weights=None))  # no pretrain stage output here
    params = replace(p, data=replace(p.data, raw_root=str(raw), height=64, width=64, num_workers=0),
                     train=replace(p.train, epochs=1, max_steps=2, batch_size=2, checkpoint_every=1,
                                   log_every=1, amp=False, compile=False))
    out = tmp_path / "full"
    train(params, get_variant("full"), out, labels_root=labels, boundary_root=boundary,
          frames=targets(range(1, 5)), progress=False)
    model = torch.load(out / "model.pt", weights_only=False)
    assert model["variant"]["name"] == "full" and model["step"] == 2
    from psdif.models import build_depth_net
    net = build_depth_net(get_variant("full"), p.model)
    net.load_state_dict(model["depth"])  # strict: the saved weights fit the real network
    rows = (out / "dvclive" / "plots" / "metrics" / "train" / "metric.tsv").read_text().splitlines()
    assert len(rows) == 3 and all(float(r.split("\t")[-1]) >= 0 for r in rows[1:])


def test_without_a_terminal_a_line_per_log_interval(tiny, tmp_path, capsys):
    """nohup / CI / cluster logs: one plain line every train.log_every steps with step, terms, speed, ETA."""
    run_standin(tiny, tmp_path / "quiet", max_steps=6, log_every=2, checkpoint_every=100)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train baseline: step")]
    assert [ln.split()[3] for ln in lines] == ["2/6", "4/6", "6/6"]
    assert all("total " in ln and "photometric " in ln and "samples/s" in ln and "ETA" in ln for ln in lines)
    assert lines[-1].endswith("ETA 0m00s")


def _stage_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_stage", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_changed_boundary_t_changes_the_run_key_and_last_pt_is_not_resumed(tiny, tmp_path, monkeypatch):
    """boundary.t is not a param of train_full, yet it changes what full trains on: the boundary stage's masks
    change, the prepare stage's boundaries manifest (a data dependency of train_full) records their content,
    and the run key (stages/train.py: params + MD5 of the data deps) follows it. The interrupted run's last.pt
    is then in another run folder, and refused (naming the manifest) when pointed at."""
    import shutil

    import yaml

    from psdif.config import to_dict
    from psdif.io import tree_manifest, write_json
    from psdif.paths import LABELS_MANIFEST, PREPARED_MANIFESTS, TRAIN_LIST

    BOUNDARY_MANIFEST = PREPARED_MANIFESTS["boundaries"]  # what train_full reads of B_t
    boundary_stage, prepare_stage = _stage_module("boundary"), _stage_module("prepare")
    train_stage = _stage_module("train")
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train_full"]
    stage = stage.get("do", stage)  # one stage per seed (foreach)
    assert "boundary.t" not in stage["params"]
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    shutil.copytree(tiny / "labels", "data/pseudolabels")  # as the pseudolabel stage leaves them
    write_json(LABELS_MANIFEST, {"config": "tiny", "files": tree_manifest("data/pseudolabels", "**/*.png")})
    Path(TRAIN_LIST).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny / "splits" / "tiny" / "train_files.txt", TRAIN_LIST)
    for dep in stage["deps"]:
        if dep.startswith("data/") and dep not in (TRAIN_LIST, *PREPARED_MANIFESTS.values()):
            Path(dep).parent.mkdir(parents=True, exist_ok=True)
            Path(dep).write_text(f"stand-in {dep}\n")
    params = tiny_params(tiny, max_steps=6, checkpoint_every=2)
    full = get_variant("full")

    def boundary_stage_with(t: int) -> dict:
        raw = to_dict(replace(params, boundary=replace(params.boundary, t=t),
                              data=replace(params.data, height=64, width=128),  # the YAML schema's minimum
                              prepare=replace(params.prepare, enabled=False)))  # manifests of the PNGs' content
        Path("params.yaml").write_text(yaml.safe_dump(raw))
        boundary_stage.main([])
        prepare_stage.main([])
        return train_stage.run_inputs(full)

    def run(out, inputs, loss):
        return train(params, full, out, labels_root=tiny / "labels", boundary_root="data/boundaries",
                     build_models=make_builder(0.2), loss_fn=loss, progress=False, inputs=inputs)

    inputs_10 = boundary_stage_with(3)
    dir_10 = train_stage.run_dir_for(params, full, inputs_10, params.train.seeds[0])
    loss = StandInLoss()

    def interrupted(*args):
        if loss.calls == 3:
            raise Interrupt
        return loss(*args)
    with pytest.raises(Interrupt):
        run(dir_10, inputs_10, interrupted)
    assert (dir_10 / "last.pt").exists()

    inputs_12 = boundary_stage_with(12)
    assert inputs_12[BOUNDARY_MANIFEST] != inputs_10[BOUNDARY_MANIFEST]
    assert {k for k in inputs_10 if inputs_10[k] != inputs_12[k]} == {BOUNDARY_MANIFEST}
    dir_12 = train_stage.run_dir_for(params, full, inputs_12, params.train.seeds[0])
    assert dir_12 != dir_10 and not (dir_12 / "last.pt").exists()   # the stage starts a fresh run
    with pytest.raises(StaleCheckpointError) as err:                 # and the old last.pt is refused
        run(dir_10, inputs_12, StandInLoss())
    assert BOUNDARY_MANIFEST in str(err.value)
    fresh = StandInLoss()
    assert run(dir_12, inputs_12, fresh).steps == 6 and fresh.calls == 6  # every step trained, none resumed
    inputs_10_again = boundary_stage_with(3)                            # back to T = 3: the same key again
    assert inputs_10_again == inputs_10
    resumed = StandInLoss()
    assert run(dir_10, inputs_10_again, resumed).steps == 6 and resumed.calls == 4  # resumed from step 2


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_code_change_starts_a_fresh_run_same_code_resumes_and_a_finished_run_is_reused(tiny, tmp_path, monkeypatch,
                                                                                     capsys):
    """The run key covers the content of every code file stages/train.py imports (psdif.codedeps.code_deps):
    an interrupted run, then psdif/losses.py edited (in a copy of the code) -> another run folder, trained from
    step 0, saying which unfinished run was not resumed; the same code again -> resumes, saying so; run once
    more -> the finished run is reused without a training step."""
    import shutil

    from psdif.codedeps import code_deps
    from psdif.train import code_inputs, train_run

    train_stage = _stage_module("train")
    # the code part of the key: every file of code_deps, by content (an independent MD5 of each file)
    code = code_inputs()
    assert set(code) == set(code_deps("stages/train.py")) and "psdif/losses.py" in code
    assert all(code[f] == _md5(REPO / f) for f in code)
    # an edit of losses.py, made in a copy of the code (the repository stays as it is)
    copy = tmp_path / "code"
    for folder in ("psdif", "stages"):
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "splits"))
    with open(copy / "psdif" / "losses.py", "a") as f:
        f.write("\n# an edit\n")
    edited = code_inputs(root=copy)
    assert {f for f in code if edited[f] != code[f]} == {"psdif/losses.py"}

    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    params = tiny_params(tiny, max_steps=10, checkpoint_every=2)
    variant, seed = get_variant("baseline"), params.train.seeds[0]
    data = {"data/lists/train_files.txt": "0" * 32}
    old_inputs, new_inputs = {**data, **code}, {**data, **edited}
    old_dir = train_stage.run_dir_for(params, variant, old_inputs, seed)
    new_dir = train_stage.run_dir_for(params, variant, new_inputs, seed)
    assert old_dir != new_dir and old_dir.parent == new_dir.parent == Path("data/runs")

    def run(run_dir, inputs, loss):
        return train_run(params, variant, run_dir, seed=seed, inputs=inputs, build_models=make_builder(0.2),
                         loss_fn=loss, progress=False)

    loss = StandInLoss()

    def interrupted(*args):
        if loss.calls == 7:  # stopped during step 8: last.pt holds step 6
            raise Interrupt
        return loss(*args)
    with pytest.raises(Interrupt):
        run(old_dir, old_inputs, interrupted)
    assert torch.load(old_dir / "last.pt", weights_only=True)["step"] == 6
    capsys.readouterr()

    fresh = StandInLoss()
    assert run(new_dir, new_inputs, fresh)["steps"] == 10 and fresh.calls == 10  # every step: nothing resumed
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if ln.startswith("note: not resuming")]
    assert len(notes) == 1 and str(old_dir) in notes[0] and "psdif/losses.py" in notes[0], err
    assert "resuming" not in err.replace("not resuming", "")
    assert (old_dir / "last.pt").is_file()  # the earlier run stays

    resumed = StandInLoss()
    assert run(old_dir, old_inputs, resumed)["steps"] == 10 and resumed.calls == 4
    err = capsys.readouterr().err
    assert f"resuming baseline seed {seed} from step 6 ({old_dir / 'last.pt'})" in err.splitlines(), err
    assert "note: not resuming" not in err
    assert (old_dir / "model.pt").is_file() and not (old_dir / "last.pt").exists()
    record = json.loads((old_dir / "result.json").read_text())
    assert record["steps"] == 10 and set(record["final_losses"]) == {"total", "photometric", "pose"}

    model_bytes = (old_dir / "model.pt").read_bytes()
    again = StandInLoss()

    def no_networks(*args):
        raise AssertionError("a finished run must not build networks")
    out = train_run(params, variant, old_dir, seed=seed, inputs=old_inputs, build_models=no_networks,
                    loss_fn=again, progress=False)
    assert again.calls == 0 and out == record
    assert f"reusing the finished run {old_dir}" in capsys.readouterr().out
    assert (old_dir / "model.pt").read_bytes() == model_bytes


def test_train_stage_reuses_a_finished_run_of_the_same_key_without_training(tiny, tmp_path, monkeypatch, capsys):
    """stages/train.py end to end (stand-in networks): its run key holds the MD5 of every code file it imports;
    a second call with the same key (outputs removed, as `dvc repro` does before running a stage) copies the
    finished run's model, logs and metrics to the outputs without a training step."""
    import shutil

    import yaml

    import psdif.train as train_mod
    from psdif.config import to_dict
    from psdif.paths import TRAIN_LIST, live_path, model_path, train_metrics_path
    from psdif.codedeps import code_deps

    train_stage = _stage_module("train")
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    shutil.copy(REPO / "dvc.yaml", "dvc.yaml")
    stage = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["train_baseline"]
    for dep in stage.get("do", stage)["deps"]:
        if dep.startswith("data/"):
            Path(dep).parent.mkdir(parents=True, exist_ok=True)
            Path(dep).write_text(f"stand-in {dep}\n")
    write_split(Path(TRAIN_LIST), targets(range(1, 14)))
    params = tiny_params(tiny, max_steps=4, checkpoint_every=2)
    Path("params.yaml").write_text(yaml.safe_dump(to_dict(replace(params, data=replace(params.data, height=64,
                                                                                         width=128)))))
    inputs = train_stage.run_inputs(get_variant("baseline"))
    assert set(code_deps("stages/train.py")) <= set(inputs)                  # the code is in the run key
    assert inputs["psdif/losses.py"] == _md5(REPO / "psdif/losses.py")

    real_train, runs = train_mod.train, []

    def standin_train(p, variant, out_dir, **kw):
        runs.append(out_dir)
        dataset = train_mod.make_dataset(params, variant, None, None, None, kw["seed"])
        kw.update(dataset=dataset, build_models=make_builder(0.2), loss_fn=StandInLoss(), prepared=None)
        return real_train(p, variant, out_dir, **kw)
    monkeypatch.setattr(train_mod, "train", standin_train)
    seed = params.train.seeds[0]
    outputs = [Path(model_path("baseline", seed)), Path(train_metrics_path("baseline", seed))]
    train_stage.main(["--variant", "baseline"])
    assert len(runs) == 1 and all(p.is_file() for p in outputs)
    first = {p: p.read_bytes() for p in outputs}
    logs = _all_files(Path(live_path("baseline", seed)))
    assert json.loads(first[outputs[1]])["steps"] == 4 and logs
    capsys.readouterr()

    for p in outputs:
        p.unlink()
    shutil.rmtree(live_path("baseline", seed))
    train_stage.main(["--variant", "baseline"])
    assert len(runs) == 1                                                      # no training
    assert f"reusing the finished run {runs[0]}" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in outputs} == first
    assert _all_files(Path(live_path("baseline", seed))) == logs


def _all_files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
