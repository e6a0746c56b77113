"""dvc.yaml is the generated one, and each train stage lists exactly the params its variant reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from psdif import pipeline
from psdif.config import default_params
from psdif.train import hashed_params
from psdif.variants import VARIANTS, params_read_by, select_params

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_generated():
    assert (REPO / "dvc.yaml").read_text() == pipeline.render(), "run `psdif dvc-yaml` and commit dvc.yaml"


def test_train_stages_read_only_their_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, v in VARIANTS.items():
        assert stages[f"train_{name}"]["params"] == params_read_by(v)
    # mu3 reaches only the full model; mu2 only the semantic variants
    users = lambda key: {n for n in VARIANTS if key in stages[f"train_{n}"]["params"]}
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
    for name, stage in pipeline.build()["stages"].items():
        script = stage["cmd"].split()[1]
        assert (REPO / script).exists(), f"{name}: {script} missing"
        for dep in stage["deps"]:
            if "$" not in dep and not dep.startswith(("data/", "models/", "metrics/")):
                assert (REPO / dep).exists(), f"{name}: dependency {dep} missing"
