"""bench/train_step.py (design.md §7): the script runs at a tiny size and times the real step with every loss."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from psdif.semantics.boundary import boundary_mask
from psdif.train import train_step

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "train_step.py"
TINY = ["--msfan-size", "tiny", "--height", "64", "--width", "96", "--batch", "2", "--warmup", "1", "--steps", "1"]


def run_bench(*extra: str) -> tuple[str, dict[str, float]]:
    """Run the script on the CPU; returns its stdout and the loss terms it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, *extra], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    terms = re.search(r"loss terms of the last step: (.*)", proc.stdout)
    assert terms, proc.stdout
    values = {k: float(v) for k, v in (kv.split("=") for kv in terms.group(1).split(", "))}
    return proc.stdout, values


def samples_per_second(stdout: str) -> float:
    m = re.search(r"([0-9.]+) samples/s, ([0-9.]+) ms/step", stdout)
    assert m, stdout
    rate, ms = float(m.group(1)), float(m.group(2))
    assert rate > 0 and rate == pytest.approx(2 / (ms / 1e3), rel=0.02)  # batch 2: samples/s = 2 / step time
    return rate


def test_full_variant_times_every_loss():
    stdout, terms = run_bench("--variant", "full", "--inference")
    samples_per_second(stdout)
    assert re.search(r"^full msfan=tiny 64x96 batch 2 fp32 eager cpu", stdout, re.M)
    assert re.search(r"batch 1 depth inference .*: [0-9.]+ ms$", stdout, re.M), stdout
    # every loss of Eq. 20 took part: photometric, smoothness, CE, and the metric loss on both boundary parts
    assert np.isfinite(terms["total"])
    assert terms["photometric"] > 0 and terms["smoothness"] > 0 and terms["ce"] > 0 and terms["metric"] > 0
    assert terms["n_boundary_gt"] > 0 and terms["n_boundary_ct"] > 0
    expected = terms["base"] + 0.2 * terms["ce"] + 0.02 * terms["metric"]  # embedded mu = (1, 0.2, 0.02)
    assert terms["total"] == pytest.approx(expected, rel=1e-4)


def test_baseline_variant_runs_without_semantic_losses():
    stdout, terms = run_bench("--variant", "baseline")
    samples_per_second(stdout)
    assert stdout.startswith("baseline msfan=tiny 64x96 batch 2")
    assert terms["ce"] == 0 and terms["metric"] == 0 and terms["photometric"] > 0
    assert terms["total"] == pytest.approx(terms["base"], rel=1e-6)


def test_synthetic_batch_matches_its_definition():
    spec = importlib.util.spec_from_file_location("bench_train_step", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    SHIFT, bench_params, synthetic_batch = bench.SHIFT, bench.bench_params, bench.synthetic_batch

    params = bench_params("tiny")
    packed = synthetic_batch(4, 64, 96, params, torch.device("cpu"), seed=3)
    assert packed.images.dtype == torch.uint8 and packed.images.shape == (4, 3, 64, 96, 3)
    assert 0 < int(packed.jittered.sum()) < 4  # the step times the jitter of the jittered items
    b = packed.unpack()
    assert b.images.shape == b.images_aug.shape == (4, 3, 3, 64, 96)
    assert torch.equal(b.images_aug[~packed.jittered], b.images[~packed.jittered])
    assert not torch.equal(b.images_aug[packed.jittered], b.images[packed.jittered])
    assert b.labels.shape == (4, 3, 64, 96) and b.boundary.shape == (4, 1, 64, 96)
    assert float(b.images.min()) >= 0 and float(b.images.max()) <= 1
    # Monodepth2 normalised KITTI K at 96 x 64 (design.md §4.2), by hand
    torch.testing.assert_close(b.K[0], torch.tensor([[0.58 * 96, 0, 48, 0], [0, 1.92 * 64, 32, 0],
                                                     [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    torch.testing.assert_close(b.inv_K @ b.K, torch.eye(4).expand(4, 4, 4), atol=1e-5, rtol=0)
    # B_t equals the numpy reference of psdif.semantics.boundary on the target labels; frames t-1 / t+1 are shifts
    for i in range(4):
        ref = boundary_mask(b.labels[i, 0].numpy(), z=params.boundary.z, t=params.boundary.t)
        np.testing.assert_array_equal(b.boundary[i, 0].numpy(), ref)
    assert 0 < b.boundary.float().mean() < 0.6
    torch.testing.assert_close(b.labels[:, 1], b.labels[:, 0].roll(-SHIFT, -1))
    torch.testing.assert_close(b.labels[:, 2], b.labels[:, 0].roll(SHIFT, -1))


def test_train_step_is_one_clean_optimiser_step():
    """psdif.train.train_step (the step train() and the bench share) on L = (w - 3)^2, SGD lr 0.1, by hand:
    w: 0 -> 0.6 -> 1.08 (the gradient is zeroed before each backward; accumulated it would give 1.68)."""
    w = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([w], lr=0.1)

    def forward_loss(batch):
        return {"total": (w - batch) ** 2}

    terms = train_step(forward_loss, torch.tensor(3.0), opt)
    assert float(w.detach()) == pytest.approx(0.6) and float(terms["total"].detach()) == pytest.approx(9.0)
    train_step(forward_loss, torch.tensor(3.0), opt)
    assert float(w.detach()) == pytest.approx(1.08)


def test_gpu_script_runs_on_the_cpu_without_dvc_or_smp(tmp_path):
    """bench/gpu.sh --device cpu --quick runs every part to the end and prints the summary block, with dvc,
    dvclive and segmentation-models-pytorch unimportable (a GPU box may lack them)."""
    from tests.conftest import SHARED_DATA

    blocked = tmp_path / "blocked"
    for name in ("dvc", "dvclive", "segmentation_models_pytorch"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": f"{blocked}{os.pathsep}{REPO}", "PYTHON": sys.executable}
    if (SHARED_DATA / "kitti-mini").is_dir():
        env["PSDIF_SHARED_DATA"] = str(SHARED_DATA)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--device", "cpu", "--quick"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    summary = proc.stdout.split("===== bench/gpu.sh summary")[1]
    assert "all parts ran" in summary
    assert re.search(r"^full msfan=tiny 64x96 batch 2 fp32 eager cpu .* samples/s", summary, re.M)
    assert re.search(r"batch 1 depth inference .*: [0-9.]+ ms", summary)
    assert re.search(r"jitter_batch on cpu.*max \|difference\| from torchvision on the CPU 0\.00e\+00", summary)
    assert re.search(r"^prepared \(after\): [0-9.]+ samples/s per core", summary, re.M)
    if "PSDIF_SHARED_DATA" in env:
        assert "real KITTI 1242x375 -> 192x640" in summary
        assert re.search(r"label_frames pipeline, 1 workers, 4 frames 64x160: [0-9.]+ frames/s", summary)
