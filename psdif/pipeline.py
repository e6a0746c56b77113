"""dvc.yaml, generated: which stage reads which params and files, derived rather than listed by hand.

``psdif dvc-yaml`` rewrites dvc.yaml from this module and tests/test_pipeline.py checks that the committed
file is what it generates (what each stage does, reads and writes: the table of docs/design.md §1). Every
file a stage reads is one of its dependencies, by content:

- Code: the stage script and every ``psdif`` module it imports, transitively (``psdif.codedeps.code_deps`` walks the
  import statements of the source, module level and inside functions), so editing any module makes exactly
  the stages that import it stale.
- Params: each train stage lists exactly the keys its variant reads (``psdif.variants.params_read_by``), so
  ``dvc exp run -S loss.mu3=0.05`` re-trains only ``full``; keys that change no result are nobody's
  dependency (``train.log_every`` / ``checkpoint_every``, ``pseudolabel.batch_size``), and the evaluate
  stages list the ``eval`` keys they read (``EVAL_KEYS``), not ``eval.figure_frames``.
- Seeds: each variant trains once per seed of ``train.seeds`` (DVC ``foreach``: stages
  ``train_<variant>@<seed>``, outputs under ``models/<variant>/seed<seed>/``). The seed reaches a stage
  through its command line, not through a param, so ``-S 'train.seeds=[0,1,2]'`` adds the runs of seeds 1
  and 2 and leaves those of seed 0 as they are. ``evaluate_<variant>`` reads the folder
  ``models/<variant>`` and writes the mean over seeds to the same ``metrics/eval/<variant>.json``.
- What DVC shows: the ``summary`` stage is listed first (DVC runs stages in dependency order, but lists
  metrics in file order) so that ``dvc exp show`` leads with its headline ``metrics/summary.json``; the
  per-run training logs (``metrics/train/``, ``dvclive/<variant>/seed<k>/``) are metrics and plots (so the
  train stages enter DVC's run-cache; their columns carry their path), and the top-level ``plots:``
  draw every variant's training curves on shared axes and the per-variant abs_rel bars
  (``psdif.evaluation.summary``), so ``dvc plots diff <exp>`` compares ablations at a glance. Metrics files
  hold numbers only: a stage report's labels, lists and flags go to ``<name>.about.json`` beside it
  (``psdif.reports``; a cached output, so the stage keeps DVC's run-cache), which the tables read back;
  ``metrics/filter.json``, written whole by the filter stage, is a plain output.
- Split lists: the input lists (``${data.splits_dir}/${data.train_split}/``, the test list) and the filtered
  training lists the filter stage writes (``data/lists/``). The stages that read both filtered lists
  (pseudolabel, pretrain) depend on the folder, not on ``val_files.txt`` itself: that list may be empty
  (every val line dropped), and DVC warns about an empty dependency file on every status check.
- Files named in params (``pseudolabel.checkpoint``, ``model.encoder_weights``, ``model.pose_weights``): the
  ``check`` stage runs on every ``dvc repro`` (``always_changed``), validates the
  whole params.yaml and opens every file it names the way its stage will (``psdif.inputs``) before any other
  stage can delete an output (every stage is downstream of it), and writes one small fingerprint file per
  input under ``data/manifests/inputs/``; a stage depends on the fingerprints of the files it reads, so a
  replaced weight file at the same path is a change, and an unchanged one reruns nothing.
- Initial weights made by the pipeline (``model.encoder_weights: pretrain`` / ``model.pose_weights: pretrain``):
  the ``pretrain`` stage's files ``data/pretrain/{msfan,resnet18}.pt`` are dependencies of the train stages (placeholders where no param names ``pretrain``, so dvc.yaml is one file for both
  presets); the check stage accepts the token before they exist.
- Large trees (KITTI raw, pseudo-labels, boundary masks) are summarised by manifests that list every file
  with its content hash; a real KITTI copy is hashed once and then only files whose size, mtime or inode
  changed (data/manifests/.raw_state.json), so ``touch`` reruns nothing. The ``download`` stage re-scans the
  raw tree (and the Make3D folder) on every ``dvc repro`` (``always_changed``) and splits the hashes by who
  reads them: ``raw_train.json`` (camera images, OXTS, calibration, semantic ground truth: filter,
  pseudolabel, boundary, prepare, pretrain) and ``raw_test.json`` (the test frames' images, scans, depth and
  Make3D: export_gt, evaluate, figures). Train stages read neither: they depend on the prepared manifests,
  keyed per (drive, camera) group by the content of its frames, so a test-side file never retrains.
- Trees the pipeline makes and keeps across runs (data/pseudolabels, data/boundaries, data/prepared) are
  outputs of their stage with ``cache: false, persist: true``, their manifests too: DVC hashes such a tree
  once and then re-reads only files whose size or mtime changed (its state database), so deleting or editing
  a file reruns the owning stage, which checks what it keeps against its previous manifest
  (``psdif.io.check_tree``), redoes what is missing or changed and writes the same manifest when the result
  is the same (then nothing downstream reruns).
- The test frames: ``export_gt`` writes the GT of the listed test frames on disk together with the list of
  frames it used (data/eval/gt_depths.npz); the evaluate and figures stages read that list, not the test list.
- Prepared frames (``prepare``, ``psdif.data.prepared``): one manifest per kind (images, labels, boundaries);
  a train stage depends on the kinds its variant reads, so new pseudo-labels rerun ``prepare`` but leave
  the image manifest (and the variants that read only images) unchanged.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from psdif.codedeps import code_deps
from psdif.config import LABELLING_INDEPENDENT, PseudolabelConfig
from psdif.paths import (BOUNDARIES, BOUNDARY_MANIFEST, COVERAGE, EVAL_DIR, EXPORT_GT_REPORT, FILTER_REPORT, GT_DEPTHS,
                         INPUT_FINGERPRINTS, INPUT_LISTS, PARAMS_OK, VALIDATED_FILES,
                         LABELS, LABELS_MANIFEST, LISTS, MODELS, PLOT_DATA, PREPARED, PREPARED_MANIFESTS,
                         PRETRAIN_MSFAN, PRETRAIN_RESNET, RAW_MANIFEST, RAW_TEST, RAW_TRAIN,
                         SUMMARY, TEST_LIST, TRAIN_LIST, VALIDATED_PARAMS, live_path, model_path,
                         train_inputs, train_metrics_path)
from psdif.reports import about_path
from psdif.variants import CURVE_TERMS, VARIANTS, params_read_by

HEADER = """\
# Generated by `psdif dvc-yaml` from psdif/pipeline.py: edit that file, not this one.
# Each stage reads: cmd, params, what it writes (outs / metrics / plots), what it reads (deps: data first, then,
# after a `# code:` line, the stage script and every psdif module it imports). Stages in the order they run
# (summary first, so that `dvc exp show` leads with its headline). docs/design.md, "Pipeline", has the table.
"""
# the order of a stage's keys in the written file (DVC reads them in any order)
KEY_ORDER = ("foreach", "do", "cmd", "always_changed", "params", "outs", "metrics", "plots", "deps")
WIDTH = 112  # PyYAML may pass it by one item: lines stay within about 120 characters

REFERENCE_ROWS = ("flat", "untrained")
SEEDS = "${train.seeds}"   # foreach over the seeds; each stage gets one as ${item}
SEED = "${item}"
# DVC templates of .dvc/plots/: a line per variant (colour) and experiment (dash); bars from zero, rows in order
LINE_TEMPLATE, BAR_TEMPLATE = "lines_by_variant", "bar_horizontal_zero"
# the eval keys the evaluate stages read (psdif.evaluation.evaluate, stages/evaluate.py); figure_frames reaches
# only the figures stage and make3d_sha256 only the download stage, so neither re-evaluates every variant
EVAL_KEYS = ["eval.min_depth", "eval.max_depth", "eval.post_process", "eval.batch_size", "eval.make3d_root",
             "eval.make3d_max_depth", "eval.make3d_urls"]
EVAL_PARAMS = [*EVAL_KEYS, "data.raw_root", "data.height", "data.width", "data.img_ext", "data.test_split",
               "data.source", "data.test_protocol", "data.intrinsics", "loss.alpha",  # the photometric score
               "video.hfov"]  # video.hfov: the rows say "guessed intrinsics"
# where the test GT comes from (Eigen: velodyne scans; eigen_benchmark: annotated depth PNGs, design.md §4.3)
TEST_GT_PARAMS = ["data.test_protocol", "data.depth_annotated_root"]
# the pseudolabel keys that decide the labels (psdif.semantics.pseudolabel.labelling_config): not batch_size, which
# changes only how many frames share a forward pass. precision stays: on CUDA it changes the labels (on a
# CPU, which always runs fp32, a rerun keeps every label: the labelling config ignores it there)
PSEUDOLABEL_REPORT, PRETRAIN_REPORT = "metrics/pseudolabel.json", "metrics/pretrain.json"
PSEUDOLABEL_PARAMS = [f"pseudolabel.{f.name}" for f in fields(PseudolabelConfig)
                      if f.name not in LABELLING_INDEPENDENT]


# ------------------------------------------------------------------------------------------ stages

def _stage(script: str, data_deps: list[str], **rest) -> dict:
    return {"cmd": f"python {script}" + (f" {rest.pop('args')}" if "args" in rest else ""),
            "deps": data_deps + code_deps(script), **rest}


def _kept_tree(tree: str, *manifests: str) -> list[dict]:
    """Outputs of a stage that keeps its files across runs (pseudolabel, boundary, prepare): the tree and its
    manifests, uncached (DVC copies nothing) and persistent (DVC deletes nothing before the stage runs, so
    finished files survive for resume, and the stage can compare them with the manifest of its last run).
    As outputs, a deleted or edited file of the tree is a change DVC sees: the stage reruns and redoes it."""
    return [{path: {"cache": False, "persist": True}} for path in (tree, *manifests)]


def _train_stage(name: str) -> dict:
    v = VARIANTS[name]
    data = train_inputs(v)  # the same list makes the data part of the stage's run key (stages/train.py)
    # DVC's run-cache keeps a stage only if every uncached output is a metric or a plot (and none persists):
    # the run's summary and DVCLive's own files are declared as such, so going back to earlier params
    # restores model.pt and the logs instead of training. DVCLive logs straight into its folder (curves
    # update while the stage runs; DVC's "simple" template titles both axes); their columns in `dvc exp show`
    # carry their path (keys repeat over runs), so the README's `--drop '.*/'` view hides them
    live = live_path(name, SEED)
    return {"foreach": SEEDS, "do": _stage(
        "stages/train.py", data, args=f"--variant {name} --seed {SEED}", params=params_read_by(v),
        outs=[model_path(name, SEED)],
        metrics=[{train_metrics_path(name, SEED): {"cache": False}}, {f"{live}/metrics.json": {"cache": False}}],
        plots=[{f"{live}/plots": {"cache": False, "template": "simple", "x": "step", "x_label": "training step",
                                  "y_label": "logged value (loss term or learning rate)"}}])}


def _about(report: str) -> str:
    """The non-metric half of a stage report (``psdif.reports``: labels, paths, lists beside the numbers): a
    cached output (git-ignored), so a stage whose other outputs are cached or metrics keeps DVC's run-cache."""
    return str(about_path(report))


def _report_files(report: str) -> list[str]:
    return [report, str(about_path(report))]


def _evaluate_data(model: list[str]) -> list[str]:
    return [*model, GT_DEPTHS, RAW_TEST]


def _plots() -> list[dict]:
    """Top-level plots: a line per variant for each loss term, and the per-variant abs_rel bars."""
    logs = {"ce": lambda v: v.seg, "metric": lambda v: v.metric_loss}  # the terms only some variants compute
    plots = [{f"train_{term}": {
        "template": LINE_TEMPLATE, "x": "step",
        "y": {f"{PLOT_DATA}/train_{term}.csv": [n for n, v in VARIANTS.items() if logs.get(term, bool)(v)]},
        "title": f"Training: {title} per variant (mean over seeds)",
        "x_label": "training step", "y_label": title}} for term, title in CURVE_TERMS.items()]
    plots.append({"abs_rel": {
        "template": BAR_TEMPLATE, "x": "abs_rel", "y": {f"{PLOT_DATA}/abs_rel.csv": "variant"},
        "title": "KITTI Eigen abs_rel per variant (Table 3; mean over seeds; lower is better)",
        "x_label": "abs_rel (Eigen protocol, median scaling)", "y_label": "variant (Table 3 row)"}})
    return plots


def build() -> dict:
    data_params = ["data.source", "data.raw_root", "data.splits_dir", "data.train_split", "data.test_split",
                   "data.img_ext"]
    fingerprints = list(INPUT_FINGERPRINTS.values())
    stages: dict = {
        # first in the file so that `dvc exp show` leads with its metrics (DVC runs it last: it needs them all)
        "summary": _stage(
            "stages/summary.py", [f"{EVAL_DIR}/{n}.json" for n in VARIANTS]
            + [str(Path(live_path(n, 0)).parent) for n in VARIANTS],  # every seed's curves of the variant
            params=["train.seeds"], metrics=[{SUMMARY: {"cache": False}}], outs=[{PLOT_DATA: {"cache": False}}]),
        "check": _stage("stages/check.py", [], always_changed=True,
                        outs=[{f: {"cache": False, "persist": True}}
                              for f in [VALIDATED_PARAMS, *fingerprints, VALIDATED_FILES, PARAMS_OK]]),
        "download": _stage("stages/download.py", [VALIDATED_PARAMS], always_changed=True,
                           params=data_params + TEST_GT_PARAMS + ["download", "synthetic", "video", "eval.make3d_root",
                                                                  "eval.make3d_urls", "eval.make3d_sha256"],
                           outs=[{path: {"cache": False}} for path in (RAW_MANIFEST, RAW_TRAIN, RAW_TEST)]),
        "filter": _stage("stages/filter.py", [RAW_TRAIN, INPUT_LISTS, TEST_LIST],
                         # train.batch_size: it checks that the kept frames fill one batch (before any training)
                         params=data_params + TEST_GT_PARAMS + ["filter", "train.batch_size"],
                         # its report holds labels and lists too: an output, not a metric (its numbers reach
                         # `dvc metrics show` through metrics/coverage.json, tables stage)
                         outs=[{LISTS: {"cache": False}}, {FILTER_REPORT: {"cache": False}}]),
        "pseudolabel": _stage("stages/pseudolabel.py",
                              [RAW_TRAIN, LISTS, TEST_LIST, INPUT_FINGERPRINTS["pseudolabel.checkpoint"]],
                              params=data_params + PSEUDOLABEL_PARAMS,
                              outs=_kept_tree(LABELS, LABELS_MANIFEST) + [_about(PSEUDOLABEL_REPORT)],
                              metrics=[{PSEUDOLABEL_REPORT: {"cache": False}}]),
        "boundary": _stage("stages/boundary.py", [LABELS_MANIFEST, RAW_TRAIN],
                           params=["boundary", "data.raw_root", "data.img_ext"],
                           outs=_kept_tree(BOUNDARIES, BOUNDARY_MANIFEST),
                           plots=[{"metrics/figures/boundary_fig4.png": {"cache": False}}]),
        "prepare": _stage("stages/prepare.py", [TRAIN_LIST, RAW_TRAIN, LABELS_MANIFEST, BOUNDARY_MANIFEST],
                          params=["prepare", "data.raw_root", "data.img_ext", "data.height", "data.width"],
                          outs=_kept_tree(PREPARED, *PREPARED_MANIFESTS.values())),
        "pretrain": _stage("stages/pretrain.py", [RAW_TRAIN, LISTS],
                           params=data_params[:2] + ["data.img_ext", "data.height", "data.width", "pretrain",
                                                     "model.msfan_size", "model.baseline_width", "model.pose_width",
                                                     "model.encoder_weights", "model.pose_weights"],
                           outs=[PRETRAIN_MSFAN, PRETRAIN_RESNET, _about(PRETRAIN_REPORT)],
                           metrics=[{PRETRAIN_REPORT: {"cache": False}}]),
    }
    for name in VARIANTS:
        stages[f"train_{name}"] = _train_stage(name)
    stages["export_gt"] = _stage("stages/export_gt.py", [RAW_TEST, TEST_LIST],
                                 params=["data.raw_root", "data.splits_dir", "data.test_split", "data.img_ext",
                                         *TEST_GT_PARAMS],
                                 outs=[GT_DEPTHS, _about(EXPORT_GT_REPORT)],
                                 metrics=[{EXPORT_GT_REPORT: {"cache": False}}])
    for name in VARIANTS:  # every seed's model of the variant: the folder models/<variant>
        stages[f"evaluate_{name}"] = _stage(
            "stages/evaluate.py", _evaluate_data([f"{MODELS}/{name}"]), args=f"--variant {name}",
            params=EVAL_PARAMS + ["train.seeds"], outs=[_about(f"{EVAL_DIR}/{name}.json")],
            metrics=[{f"{EVAL_DIR}/{name}.json": {"cache": False}}])
    stages["evaluate_reference"] = _stage(
        "stages/evaluate.py", _evaluate_data([INPUT_FINGERPRINTS["model.encoder_weights"],
                                              INPUT_FINGERPRINTS["model.pose_weights"]]), args="--reference",
        params=EVAL_PARAMS + ["model", "train.seeds"],
        outs=[_about(f"{EVAL_DIR}/{name}.json") for name in REFERENCE_ROWS],
        metrics=[{f"{EVAL_DIR}/{name}.json": {"cache": False}} for name in REFERENCE_ROWS])
    stages["figures"] = _stage(
        "stages/figures.py", [f"{MODELS}/baseline", f"{MODELS}/full", f"{MODELS}/msfan", LABELS_MANIFEST,
                              BOUNDARY_MANIFEST,
                              RAW_TRAIN, RAW_TEST, GT_DEPTHS],
        params=["eval.figure_frames", "eval.batch_size", "data", "model.min_depth", "model.max_depth", "train.seeds",
                "video.fps"], outs=[{"metrics/figures/depth_video.mp4": {"cache": False}}],
        plots=[{f"metrics/figures/{n}.png": {"cache": False}} for n in ("fig6_qualitative", "fig5_inconsistency")])
    stages["tables"] = _stage(
        "stages/tables.py",
        [p for n in (*VARIANTS, *REFERENCE_ROWS) for p in _report_files(f"{EVAL_DIR}/{n}.json")]
        + [FILTER_REPORT, *_report_files(EXPORT_GT_REPORT)],
        outs=[{"metrics/tables": {"cache": False}}, _about(COVERAGE)], metrics=[{COVERAGE: {"cache": False}}])
    return {"stages": stages, "plots": _plots()}


def _dump(obj, indent: int, flow: bool | None = None) -> list[str]:
    """YAML lines of ``obj`` at ``indent``; ``flow=None``: lists of scalars and small mappings in flow style
    (``[a, b]``, ``{cache: false}``), a mapping of a key to a scalar as ``key: value``."""
    if isinstance(obj, dict) and not any(isinstance(v, (dict, list)) for v in obj.values()):
        flow = False
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=flow, width=WIDTH - indent)
    return [" " * indent + line for line in text.splitlines()]


def _stage_lines(stage: dict, indent: int) -> list[str]:
    unknown = set(stage) - set(KEY_ORDER)
    assert not unknown, f"stage key(s) {unknown}: add them to KEY_ORDER"
    pad, lines = " " * indent, []
    for key in (k for k in KEY_ORDER if k in stage):
        value = stage[key]
        if key == "do":
            lines += [f"{pad}do:", *_stage_lines(value, indent + 2)]
        elif key == "deps":  # one per line: the data, then the code after a comment line
            data = [d for d in value if not d.endswith(".py")]
            code = [d for d in value if d.endswith(".py")]
            lines += [f"{pad}deps:", *(_dump(data, indent, flow=False) if data else [])]
            lines += [f"{pad}# code: {code[0]} and the psdif modules it imports", *_dump(code, indent, flow=False)]
        else:
            lines += _dump({key: value}, indent)
    return lines


def render() -> str:
    """dvc.yaml's text: :func:`build`, each stage's keys in :data:`KEY_ORDER`, a blank line between stages."""
    built = build()
    lines = ["stages:"]
    for name, stage in built["stages"].items():
        lines += [f"  {name}:", *_stage_lines(stage, 4), ""]
    lines += _dump({"plots": built["plots"]}, 0)
    return HEADER + "\n".join(lines) + "\n"


def write(path: str | Path = "dvc.yaml") -> Path:
    from psdif.io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(render())
    return path
