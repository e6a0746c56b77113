"""dvc.yaml is the generated one, and each train stage lists exactly the params its variant reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from psdif import pipeline
from psdif.config import default_params
from psdif.train import hashed_params
from psdif.variants import VARIANTS, params_read_by, select_params
from tests.project import copy_tracked

REPO = Path(__file__).resolve().parents[1]


def _expanded(params: dict | None = None) -> dict:
    """The generated stages as DVC names and resolves them: a ``foreach`` over ``${train.seeds}`` becomes
    ``<name>@<seed>`` with ``${item}`` replaced (independent of DVC's own parser)."""
    params = params or yaml.safe_load((REPO / "params.yaml").read_text())
    out = {}
    for name, stage in pipeline.build()["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        assert stage["foreach"] == "${train.seeds}", name
        for seed in params["train"]["seeds"]:
            text = json.dumps(stage["do"]).replace("${item}", str(seed))
            out[f"{name}@{seed}"] = json.loads(text)
    return out


def test_committed_dvc_yaml_is_generated():
    assert (REPO / "dvc.yaml").read_text() == pipeline.render(), "run `psdif dvc-yaml` and commit dvc.yaml"


def test_train_stages_read_only_their_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, v in VARIANTS.items():
        assert stages[f"train_{name}"]["do"]["params"] == params_read_by(v)
    # mu3 reaches only the full model; mu2 only the semantic variants
    users = lambda key: {n for n in VARIANTS if key in stages[f"train_{n}"]["do"]["params"]}
    assert users("loss.mu3") == {"full"}
    assert users("loss.mu2") == {"msfan_seg", "msfan_seg_psdifm", "full"}
    assert users("model.baseline_width") == {"baseline"}


def test_every_listed_param_exists_and_checkpoint_hash_follows_them():
    import dataclasses

    raw = dataclasses.asdict(default_params())
    p = default_params()
    for v in VARIANTS.values():
        select_params(raw, params_read_by(v))  # KeyError if a listed key does not exist
        h = hashed_params(p, v)
        assert "loss.mu3" in str(h) if v.metric_loss else "mu3" not in str(h)


def test_stage_scripts_exist_for_every_stage():
    for name, stage in _expanded().items():
        script = stage["cmd"].split()[1]
        assert (REPO / script).exists(), f"{name}: {script} missing"
        for dep in stage["deps"]:
            if "$" not in dep and not dep.startswith(("data/", "models/", "metrics/", "dvclive/", "psdif/splits/")):
                assert (REPO / dep).exists(), f"{name}: dependency {dep} missing"


# ------------------------------------------------------------------------------------------ derived deps

def _text_imports(path: Path) -> set[str]:
    """psdif modules a file imports, read with regular expressions (independent of psdif.pipeline's AST walk)."""
    text = path.read_text()
    found = set()
    for m in re.finditer(r"^\s*from\s+(psdif[\w.]*)\s+import\s+(\([^)]*\)|[^\n#]*)", text, flags=re.M):
        base = m.group(1)
        found.add(base)
        for name in re.findall(r"\w+", m.group(2)):
            found.add(f"{base}.{name}")
    for m in re.finditer(r"^\s*import\s+(psdif[\w.]*)", text, flags=re.M):
        found.add(m.group(1))
    return found


def _file_of(module: str) -> Path | None:
    base = REPO / Path(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _closure(script: str) -> set[str]:
    todo, seen = [REPO / script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _text_imports(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                if (f := _file_of(".".join(parts[:i]))) is not None:
                    todo.append(f)
    return {str(p.relative_to(REPO)) for p in seen}


def test_code_deps_are_what_the_script_imports():
    for name, stage in _expanded().items():
        script = stage["cmd"].split()[1]
        code = {d for d in stage["deps"] if d.endswith(".py")}
        assert code == _closure(script), f"{name}: {sorted(code ^ _closure(script))}"
    # the modules the issue found missing are there
    deps = {n: set(s["deps"]) for n, s in _expanded().items()}
    assert {"psdif/data/kitti.py", "psdif/config.py", "psdif/io.py"} <= deps["evaluate_full"]
    assert {"psdif/semantics/boundary.py", "psdif/data/kitti.py"} <= deps["pseudolabel"] | deps["boundary"]
    assert {"psdif/losses.py", "psdif/models/pose.py", "psdif/models/psdifm.py"} <= deps["figures"]
    assert all("psdif/config.py" in d and "psdif/io.py" in d for d in deps.values())


def _resolve(path: str, params: dict) -> str:
    def value(m):
        node = params
        for part in m.group(1).split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([\w.]+)\}", value, path)


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory):
    """The tracked files in a fresh git repo whose dvc.lock records the current files (stand-in data and
    outputs, `dvc commit`), so `dvc status` reports exactly what a later edit changes."""
    import shutil
    import subprocess
    import sys

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path_factory.mktemp("deps") / "psdif"
    copy_tracked(dest)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for stage in _expanded(params).values():
        for entry in stage["deps"] + [next(iter(o)) if isinstance(o, dict) else o
                                      for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]:
            path = dest / _resolve(entry, params)
            if path.exists():
                continue
            if path.suffix:  # a stand-in file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"stand-in {entry}\n")
            else:            # a stand-in folder
                (path / "stand-in.txt").parent.mkdir(parents=True, exist_ok=True)
                (path / "stand-in.txt").write_text("stand-in\n")
    env = dict(__import__("os").environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"], [dvc, "commit", "-f", "-q"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)

    def status() -> dict:
        out = subprocess.run([dvc, "status", "--json"], cwd=dest, env=env, check=True, capture_output=True,
                             text=True).stdout
        return json.loads(out or "{}")
    assert set(status()) == {"check", "download"}  # the two stages that run on every repro
    return dest, status


def _stages_with_changed(status: dict, path: str) -> set[str]:
    return {stage for stage, changes in status.items() for c in changes
            if isinstance(c, dict) and path in c.get("changed deps", {})}


@pytest.mark.parametrize("module", ["psdif/data/kitti.py", "psdif/losses.py", "psdif/config.py",
                                    "psdif/semantics/boundary.py"])
def test_dvc_status_names_every_stage_that_imports_an_edited_module(committed_copy, module):
    dest, status = committed_copy
    target = dest / module
    original = target.read_text()
    target.write_text(original + "\n# an edit\n")
    try:
        stale = _stages_with_changed(status(), module)
    finally:
        target.write_text(original)
    importers = {name for name, s in _expanded().items() if module in _closure(s["cmd"].split()[1])}
    assert importers and stale == importers


def test_dvc_status_sees_an_edited_split_list(committed_copy):
    """Deleting two lines of the test list makes every stage that reads it stale (it was nobody's dep); the
    evaluate and figures stages read the frames the GT export used (data/eval/gt_depths.npz), not the list."""
    dest, status = committed_copy
    params = yaml.safe_load((dest / "params.yaml").read_text())
    test_list = _resolve(pipeline.TEST_LIST, params)
    path = dest / test_list
    original = path.read_text()
    path.write_text("\n".join(original.splitlines()[2:]) + "\n")
    try:
        stale = _stages_with_changed(status(), test_list)
    finally:
        path.write_text(original)
    assert stale == {"filter", "pseudolabel", "export_gt"}


def test_check_stage_fingerprints_weight_files_by_content(tmp_path, monkeypatch, capsys):
    """A weight file replaced at the same path (same size) changes its fingerprint; an untouched one does not,
    so DVC reruns exactly the stages that read it (and nothing on an unchanged file)."""
    import importlib.util

    import torch

    from psdif.models.layers import ResNet18Encoder

    raw = yaml.safe_load((REPO / "psdif/presets/embedded.yaml").read_text())
    weights = tmp_path / "pose.pth"
    width = raw["model"]["pose_width"]
    assert raw["model"]["baseline_width"] == width
    torch.manual_seed(0)
    torch.save(ResNet18Encoder(3, width).state_dict(), weights)  # loads into the pose net and the baseline
    raw["model"]["pose_weights"] = str(weights)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("check_stage", REPO / "stages/check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    fp = tmp_path / pipeline.INPUT_FINGERPRINTS["model.pose_weights"]
    check.main([])
    first = fp.read_bytes()
    check.main([])
    assert fp.read_bytes() == first                       # unchanged file: identical fingerprint
    torch.manual_seed(1)
    size = weights.stat().st_size
    torch.save(ResNet18Encoder(3, width).state_dict(), weights)  # replaced at the same path, same size
    assert weights.stat().st_size == size
    check.main([])
    assert fp.read_bytes() != first
    assert json.loads(fp.read_text())["sha256"] == __import__("hashlib").sha256(weights.read_bytes()).hexdigest()
    raw["model"]["pose_weights"] = str(tmp_path / "missing.pth")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit):
        check.main([])
    assert "model.pose_weights" in capsys.readouterr().err


def test_check_runs_before_every_other_stage():
    """Every stage depends, through the files of dvc.yaml, on the check stage's output (the download stage reads
    data/manifests/inputs/params.json and every other stage what download writes), so `dvc repro` cannot run the
    pseudolabel or a train stage, which delete outputs, before params.yaml and its files have passed."""
    stages = _expanded()
    writers = {}
    for name, stage in stages.items():
        for o in (stage.get(k, []) for k in ("outs", "metrics", "plots")):
            for entry in o:
                writers[next(iter(entry)) if isinstance(entry, dict) else entry] = name

    def upstream(name: str, seen: set) -> set:
        for dep in stages[name]["deps"]:
            for out, writer in writers.items():
                if (dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")) and writer not in seen:
                    seen.add(writer)
                    upstream(writer, seen)
        return seen

    assert not upstream("check", set())
    for name in stages:
        if name != "check":
            assert "check" in upstream(name, set()), name
    assert pipeline.VALIDATED_PARAMS in stages["download"]["deps"]


def test_cadence_keys_neither_retrain_nor_change_the_run_key():
    """train.log_every / checkpoint_every only say how often a run logs and saves: no train stage lists them and
    the run key that decides whether a finished run is reused ignores them."""
    import dataclasses

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    p = default_params()
    other = dataclasses.replace(p, train=dataclasses.replace(p.train, log_every=p.train.log_every + 7,
                                                             checkpoint_every=p.train.checkpoint_every + 3))
    for name, v in VARIANTS.items():
        listed = stages[f"train_{name}"]["do"]["params"]
        assert "train.log_every" not in listed and "train.checkpoint_every" not in listed
        assert "train.lr" in listed  # what changes the weights still is
        assert hashed_params(other, v, seed=0) == hashed_params(p, v, seed=0)
        changed = dataclasses.replace(p, train=dataclasses.replace(p.train, lr=p.train.lr / 2))
        assert hashed_params(changed, v, seed=0) != hashed_params(p, v, seed=0)


def test_evaluate_stages_read_no_figure_keys_and_every_eval_key_has_a_reader():
    from dataclasses import fields

    from psdif.config import EvalConfig

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    evaluate = [s for n, s in stages.items() if n.startswith("evaluate_")]
    assert len(evaluate) == len(VARIANTS) + 1
    for stage in evaluate:
        assert "eval" not in stage["params"] and "eval.figure_frames" not in stage["params"]
        assert "eval.make3d_sha256" not in stage["params"]  # the download stage checks archives, not evaluate
        assert {"eval.min_depth", "eval.max_depth", "eval.post_process"} <= set(stage["params"])
    assert "eval.figure_frames" in stages["figures"]["params"]
    # every eval key reaches some stage: the evaluate stages, the figures or the download stage
    listed = {k for s in stages.values() for k in s.get("params", s.get("do", {}).get("params", []))}
    assert {f"eval.{f.name}" for f in fields(EvalConfig)} <= listed


def test_labels_do_not_depend_on_how_fast_they_are_made():
    """pseudolabel.batch_size never changes the labels and pseudolabel.precision only on CUDA (a CPU labels in
    fp32): neither relabels on a CPU; teacher_seed still does. dvc.yaml leaves batch_size out."""
    import dataclasses

    from psdif.semantics.pseudolabel import labelling_config

    p = default_params()

    def with_(**kw):
        return dataclasses.replace(p, pseudolabel=dataclasses.replace(p.pseudolabel, **kw))

    config = lambda q, cuda: labelling_config(q, {"raw": 1}, cuda=cuda)  # noqa: E731
    base = config(p, False)
    assert config(with_(precision="bf16"), False) == base
    assert config(with_(batch_size=p.pseudolabel.batch_size * 3), False) == base
    assert config(with_(batch_size=p.pseudolabel.batch_size * 3), True) == config(p, True)
    assert config(with_(precision="fp32"), True) != config(with_(precision="bf16"), True)
    assert config(with_(teacher_seed=p.pseudolabel.teacher_seed + 1), False) != base
    params = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["pseudolabel"]["params"]
    assert "pseudolabel.batch_size" not in params and "pseudolabel" not in params
    assert {"pseudolabel.teacher_seed", "pseudolabel.checkpoint", "pseudolabel.precision"} <= set(params)
