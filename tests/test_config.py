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
    ("data", "source", "kiti", r"data.source='kiti' is not one of \['synthetic', 'kitti', 'video'\]"),
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
    backups = list(tmp_path.glob(".psdif/backups/params.yaml.*.bak"))
    assert not list(tmp_path.glob("*.bak"))  # nothing left in the project root
    assert r.returncode == 0 and len(backups) == 1 and str(backups[0]) in r.stdout
    assert "mu33" in backups[0].read_text()
    r = run("preset", "nope", "-o", str(out))
    assert r.returncode == 2 and "'nope'" in r.stderr and "embedded" in r.stderr and "paper" in r.stderr


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
    backups = sorted(tmp_path.glob(".psdif/backups/params.yaml.*.bak"))
    assert len(backups) == 2, backups
    contents = {b.read_text() for b in backups}
    assert contents == {mine, config.preset_path("paper").read_text()}
    for b, said in ((b, first if b.read_text() == mine else second) for b in backups):
        assert str(b) in said  # each run says where the previous file went
        assert re.fullmatch(r"params\.yaml\.\d{8}-\d{6}(-\d+)?\.bak", b.name), b.name
    assert out.read_text() == config.preset_path("embedded").read_text()
    # a third switch with identical content writes no backup at all
    assert main(["preset", "embedded", "-o", str(out)]) == 0
    assert len(list(tmp_path.glob(".psdif/backups/params.yaml.*.bak"))) == 2


@pytest.mark.parametrize("section,key,value,message", [
    # each of these validated and then crashed or silently did the wrong thing
    ("train", "lr", 1000, r"train.lr=1000.0 must be <= 1"),
    ("train", "lr", "1e400", r"train.lr='1e400' must be a finite number"),   # YAML reads 1e400 as a string
    ("train", "lr", float("nan"), r"train.lr=nan must be a finite number"),
    ("loss", "mu3", float("inf"), r"loss.mu3=inf must be a finite number"),
    ("eval", "make3d_max_depth", float("-inf"), r"eval.make3d_max_depth=-inf must be a finite number"),
    ("pseudolabel", "teacher_scale", [0.75, float("inf")], r"pseudolabel.teacher_scale\[1\]=inf must be a finite"),
    ("pseudolabel", "teacher_lr", 5.0, r"pseudolabel.teacher_lr=5.0 must be <= 1"),
    ("train", "max_steps", -5, r"train.max_steps=-5 must be >= 1"),
    ("train", "max_steps", 0, r"train.max_steps=0 must be >= 1 \(or null"),
    ("loss", "metric_scales", [7], r"loss.metric_scales=\[7\]: scale 7 is not one of the depth-decoder "
                                   r"feature scales \[1, 2, 3\]"),
    ("loss", "metric_scales", [], r"loss.metric_scales=\[\] must name at least one scale"),
    ("loss", "metric_scales", [1, 1], r"loss.metric_scales=\[1, 1\] lists scale 1 twice"),
    ("eval", "min_depth", 90.0, r"eval.min_depth=90.0 must be < eval.max_depth=80.0"),
    ("model", "min_depth", 200.0, r"model.min_depth=200.0 must be < model.max_depth=100.0"),
    ("eval", "make3d_max_depth", 0, r"eval.make3d_max_depth=0.0 must be > 0"),
    ("boundary", "t", 0, r"boundary.t=0 selects no pixel"),
    ("boundary", "t", 25, r"boundary.t=25 makes every pixel a boundary pixel"),
    ("boundary", "figure_z", [3, 4], r"boundary.figure_z\[1\]=4 must be odd"),
    ("boundary", "figure_t", [-1], r"boundary.figure_t\[0\]=-1 must be >= 0"),
    ("pseudolabel", "teacher_height", 100, r"pseudolabel.teacher_height=100 must be a multiple of 16"),
    ("pseudolabel", "teacher_scale", [1.25, 0.75], r"pseudolabel.teacher_scale=\[1.25, 0.75\] must be \[min, max\]"),
    ("pseudolabel", "teacher_scale", [0.5], r"pseudolabel.teacher_scale=\[0.5\] must be \[min, max\]"),
    ("pseudolabel", "teacher_scale", [0.0, 1.0], r"pseudolabel.teacher_scale=\[0.0, 1.0\] must be \[min, max\]"),
    ("pseudolabel", "checkpoint", "", r"pseudolabel.checkpoint is empty"),
    ("data", "raw_root", "  ", r"data.raw_root is empty"),
    ("model", "num_classes", 7, r"model.num_classes=7 must be 19"),
    ("eval", "figure_frames", [0, -1], r"eval.figure_frames\[1\]=-1 must be >= 0"),
    ("eval", "make3d_sha256", ["abc"], r"eval.make3d_sha256\[0\]='abc' must be 64 hexadecimal"),
])
def test_values_that_would_crash_later_are_refused_naming_the_key(raw, section, key, value, message):
    if key == "make3d_sha256":
        raw["eval"]["make3d_urls"] = ["http://example.org/Test134.tar.gz"]
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


@pytest.mark.parametrize("changes,message", [
    ({"data": {"height": 256}}, r"data.height=256 is larger than the generated frames' "
                                r"synthetic.image_height=136"),
    ({"data": {"width": 480}}, r"data.width=480 is larger than the generated frames' synthetic.image_width=448"),
    ({"train": {"batch_size": 1000}}, r"train.batch_size=1000 is more than the 480 generated training frames"),
])
def test_cross_section_checks_on_the_generated_data(raw, changes, message):
    for section, values in changes.items():
        raw[section].update(values)
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
    raw["data"]["source"] = "kitti"  # real KITTI: the synthetic section does not apply
    raw["model"].update(encoder_weights=None, pose_weights=None)  # nor the pretrain token (generated ground truth)
    parse_params(raw)


def test_bounds_keep_every_sane_value(raw):
    """The edges of each range still validate (no bound too tight)."""
    raw["train"]["lr"] = 1
    raw["train"]["max_steps"] = None
    raw["loss"]["metric_scales"] = [3, 1]
    raw["boundary"].update(t=1, z=3, figure_z=[1, 3])
    raw["pseudolabel"].update(teacher_scale=[1.0, 1.0], teacher_height=32)
    raw["eval"].update(min_depth=0.5, max_depth=0.6, figure_frames=[])
    raw["eval"].update(make3d_urls=["u"], make3d_sha256=["a" * 64])
    p = parse_params(raw)
    assert p.train.max_steps is None and p.loss.metric_scales == [3, 1]
    raw["boundary"].update(t=8, z=3)  # 8 < 3 x 3: still selects some pixels
    parse_params(raw)


def test_oracle_labeller_only_on_generated_data_without_a_checkpoint(raw):
    raw["pseudolabel"]["labeller"] = "oracle"
    assert parse_params(raw).pseudolabel.labeller == "oracle"
    raw["pseudolabel"]["checkpoint"] = "data/checkpoints/x.pth"
    with pytest.raises(ParamsError, match="pseudolabel.labeller=oracle with pseudolabel.checkpoint"):
        parse_params(raw)
    raw["pseudolabel"]["checkpoint"] = None
    raw["data"]["source"] = "kitti"
    with pytest.raises(ParamsError, match="pseudolabel.labeller=oracle needs data.source: synthetic"):
        parse_params(raw)
    raw["pseudolabel"]["labeller"] = "orcale"
    with pytest.raises(ParamsError, match=r"pseudolabel.labeller='orcale' is not one of \['teacher', 'oracle'\]"):
        parse_params(raw)


@pytest.mark.parametrize("section,key,value,message", [
    # each of these validated and then failed inside a stage (the download stage after deleting the drives)
    ("synthetic", "seed", -5, r"synthetic.seed=-5 must be >= 0 \(a seed"),
    ("pretrain", "seed", -1, r"pretrain.seed=-1 must be >= 0"),
    ("pseudolabel", "teacher_seed", -1, r"pseudolabel.teacher_seed=-1 must be >= 0"),
    ("train", "seeds", [0, -1], r"train.seeds\[1\]=-1 must be >= 0"),
    ("synthetic", "seed", 2**32, r"synthetic.seed=4294967296 must be <= 4294967295"),
    ("train", "seeds", 0, r"train.seeds=0 must be a list of int, e.g. \[0\]"),
    ("train", "seeds", [], r"train.seeds is empty"),
    ("train", "seeds", [1, 1], r"train.seeds=\[1, 1\] must be distinct"),
    ("train", "seeds", [0, 1.5], r"train.seeds\[1\]=1.5 must be an integer"),
])
def test_seeds_are_non_negative_integers(raw, section, key, value, message):
    raw[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)
    raw[section][key] = [0, 2**32 - 1] if key == "seeds" else 2**32 - 1  # the edges validate
    parse_params(raw)


def test_every_integer_param_has_a_range_or_a_check():
    """No int field is left unbounded (a negative seed or count passed and failed inside a stage)."""
    import dataclasses
    import typing

    checked_in_post_init = {"model.decoder_channels", "loss.metric_scales"}
    unbounded = []

    def walk(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, key = hints[f.name], f"{prefix}{f.name}"
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{key}.")
            elif int in (typing.get_args(tp) or (tp,)) or typing.get_args(tp) == (int,) or \
                    any(a is int or typing.get_args(a) == (int,) for a in typing.get_args(tp)):
                meta = f.metadata
                if not any(meta.get(b) is not None for b in ("ge", "gt")) and key not in checked_in_post_init:
                    unbounded.append(key)
    walk(config.Params)
    assert not unbounded, unbounded


def test_every_problem_of_a_params_file_is_reported_at_once(raw, tmp_path):
    """Four mistakes in four sections: one error listing all four (not one per run)."""
    raw["loss"]["mu33"] = 1
    raw["synthetic"]["seed"] = -5
    raw["boundary"]["z"] = 4
    raw["train"]["seeds"] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError) as info:
        config.load_params(path)
    problems = info.value.problems
    assert len(problems) == 4 and all(m.startswith(f"{path}: ") for m in problems), problems
    for expected in ("unknown parameter loss.mu33", "synthetic.seed=-5", "boundary.z=4 must be odd",
                     "train.seeds=0 must be a list"):
        assert sum(expected in m for m in problems) == 1, (expected, problems)
        assert expected in str(info.value)


def test_cli_version_and_preset_help_list_what_there_is(capsys):
    """`psdif --version` prints the package version (exit 0); `psdif preset -h` names every preset file."""
    import psdif
    from psdif.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"psdif {psdif.__version__}"
    with pytest.raises(SystemExit) as exc:
        main(["preset", "-h"])
    shown = capsys.readouterr().out
    names = sorted(p.stem for p in config.preset_path("embedded").parent.glob("*.yaml"))
    assert exc.value.code == 0 and names and all(n in shown for n in names)
    with pytest.raises(SystemExit) as exc:
        main(["preset", "nonesuch"])
    assert exc.value.code == 2 and "embedded" in capsys.readouterr().err


def test_no_declared_dependency_goes_unused():
    """Every runtime dependency of pyproject.toml is imported somewhere in psdif/ or stages/."""
    import re
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    modules = {"opencv-python-headless": "cv2", "scikit-image": "skimage", "segmentation-models-pytorch": "segmentation_models_pytorch",
               "pyyaml": "yaml", "pillow": "PIL"}
    source = "\n".join(p.read_text() for d in ("psdif", "stages") for p in (REPO / d).rglob("*.py"))
    unused = []
    for dep in deps:
        name = re.split(r"[<>=!~ \[]", dep, maxsplit=1)[0].lower()
        module = modules.get(name, name.replace("-", "_"))
        if name == "dvc":  # the pipeline runner: used as a command, not imported
            continue
        if not re.search(rf"^\s*(import|from)\s+{re.escape(module)}\b", source, re.M):
            unused.append(name)
    assert not unused, f"declared in pyproject.toml but imported nowhere: {unused}"
