"""params.yaml schema: every preset validates; misspelled keys, wrong types and ranges fail by name."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from psdif import config
from psdif.config import ParamsError, parse_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def raw():
    return yaml.safe_load(config.preset_path("embedded").read_text())


def test_presets_validate_and_params_yaml_is_the_embedded_preset():
    for name in ("embedded", "paper"):
        config.load_params(config.preset_path(name))
    assert (REPO / "params.yaml").read_text() == config.preset_path("embedded").read_text()


def test_embedded_and_paper_presets_have_the_same_keys():
    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out
    a = yaml.safe_load(config.preset_path("embedded").read_text())
    b = yaml.safe_load(config.preset_path("paper").read_text())
    assert keys(a) == keys(b)


@pytest.mark.parametrize("section,key,near", [("loss", "mu33", "loss.mu3"), ("train", "bach_size", "train.batch_size"),
                                              ("boundary", "tt", None)])
def test_unknown_key_is_named_with_nearest(raw, section, key, near):
    raw[section][key] = 1
    with pytest.raises(ParamsError, match=rf"unknown parameter {section}\.{key}") as exc:
        parse_params(raw)
    if near:
        assert f"did you mean {near}?" in str(exc.value)


def test_unknown_section_and_missing_key(raw):
    bad = copy.deepcopy(raw)
    bad["los"] = {}
    with pytest.raises(ParamsError, match="unknown parameter los; did you mean loss"):
        parse_params(bad)
    del raw["loss"]["mu2"]
    with pytest.raises(ParamsError, match="missing parameter loss.mu2"):
        parse_params(raw)


@pytest.mark.parametrize("section,key,value,message", [
    ("loss", "mu3", "abc", "loss.mu3='abc' must be a number"),
    ("loss", "mu3", -0.1, "loss.mu3=-0.1 must be >= 0"),
    ("train", "batch_size", 2.5, "train.batch_size=2.5 must be an integer"),
    ("train", "batch_size", 0, "train.batch_size=0 must be >= 1"),
    ("data", "height", 100, "data.height=100 must be a multiple of 32"),
    ("data", "source", "kiti", r"data.source='kiti' is not one of \['synthetic', 'kitti'\]"),
    ("boundary", "z", 4, "boundary.z=4 must be odd"),
    ("loss", "metric_scales", 3, "loss.metric_scales=3 must be a list"),
    ("loss", "automask", "yes", "loss.automask='yes' must be true or false"),
])
def test_wrong_types_and_ranges(raw, section, key, value, message):
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_ints_accepted_for_floats_and_scientific_strings(raw):
    raw["loss"]["mu1"] = 1
    raw["train"]["lr"] = "1e-4"  # YAML 1.1 reads 1e-4 (no dot) as a string
    p = parse_params(raw)
    assert p.loss.mu1 == 1.0 and isinstance(p.loss.mu1, float) and p.train.lr == 1e-4


def test_cli_preset_and_check(tmp_path):
    out = tmp_path / "params.yaml"
    run = lambda *a: subprocess.run([sys.executable, "-m", "psdif.cli", *a], capture_output=True, text=True)
    r = run("preset", "paper", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert config.load_params(out).data.source == "kitti"
    out.write_text(out.read_text().replace("  mu3:", "  mu33:"))
    r = run("check-params", str(out))
    assert r.returncode == 2 and "loss.mu33" in r.stderr and "did you mean loss.mu3" in r.stderr
    r = run("preset", "paper", "-o", str(out))
    backups = list(tmp_path.glob("params.yaml.*.bak"))
    assert r.returncode == 0 and len(backups) == 1 and str(backups[0]) in r.stdout
    assert "mu33" in backups[0].read_text()
    r = run("preset", "nope", "-o", str(out))
    assert r.returncode == 2 and "unknown preset 'nope'" in r.stderr


def test_preset_never_overwrites_an_earlier_backup(tmp_path, capsys):
    """preset paper, then preset embedded: the user's own params survive both (the .bak was clobbered)."""
    from psdif.cli import main

    out = tmp_path / "params.yaml"
    mine = config.preset_path("embedded").read_text().replace("mu3: 0.02", "mu3: 0.07  # my experiment")
    out.write_text(mine)
    assert main(["preset", "paper", "-o", str(out)]) == 0
    first = capsys.readouterr().out
    assert main(["preset", "embedded", "-o", str(out)]) == 0  # within the same second as the first
    second = capsys.readouterr().out
    backups = sorted(tmp_path.glob("params.yaml.*.bak"))
    assert len(backups) == 2, backups
    contents = {b.read_text() for b in backups}
    assert contents == {mine, config.preset_path("paper").read_text()}
    for b, said in ((b, first if b.read_text() == mine else second) for b in backups):
        assert str(b) in said  # each run says where the previous file went
        assert re.fullmatch(r"params\.yaml\.\d{8}-\d{6}(-\d+)?\.bak", b.name), b.name
    assert out.read_text() == config.preset_path("embedded").read_text()
    # a third switch with identical content writes no backup at all
    assert main(["preset", "embedded", "-o", str(out)]) == 0
    assert len(list(tmp_path.glob("params.yaml.*.bak"))) == 2
