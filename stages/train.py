"""train_<variant>@<seed> stages: one Table-3 variant, one seed -> models/<variant>/seed<seed>/model.pt,
metrics/train/<variant>/seed<seed>.json, dvclive/<variant>/seed<seed>/ (paths: psdif.paths).

The run lives in data/runs/<variant>-<run key>/ (resumable ``last.pt``); the run key covers the seed, the
params the variant reads, the content of every data file the stage depends on (lists, manifests, weight
fingerprints) and the content of every code file it imports (``psdif.train.code_inputs``), so an interrupted
`dvc repro` resumes where it stopped (saying so) and a run on other params, data or code starts in another
folder at step 0 (naming the unfinished run it did not resume). A finished run of the same key is reused:
its model and logs are copied to the stage's outputs without training. DVCLive logs straight into
dvclive/<variant>/seed<seed>/ while the run goes on; the run folder keeps a copy of it with each checkpoint
(DVC deletes the stage's outputs before it runs), put back before a resumed run continues. The run folder is
locked while it trains (``psdif.process.folder_lock``): a second run of the same key stops at once, naming
the PID of the first. Ctrl-C / SIGTERM end it with one line naming the last checkpoint kept (exit 130 / 143).

Several GPUs: set PSDIF_NPROC=N and the stage re-executes itself under torchrun (one
process per GPU, DDP); several machines: PSDIF_NNODES, PSDIF_NODE_RANK, PSDIF_RDZV_ENDPOINT as well
(``psdif.distributed``). Only global rank 0 writes.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import nullcontext
from pathlib import Path

from psdif.distributed import relaunch_under_torchrun
from psdif.stage import stage_args
from psdif.io import progress_enabled
from psdif.io import atomic_path, write_json
from psdif.process import FolderLockedError, folder_lock
from psdif.variants import NO_LABELLER, NO_LABELLER_WHY, VARIANTS, get_variant, needs_labels


def _args(parser):
    parser.add_argument("--variant", required=True, choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=None,
                        help="training seed (default: the first of train.seeds); dvc.yaml passes each of them")


def run_inputs(variant) -> dict[str, str]:
    """``{path: MD5}`` of every data file the variant's train stage depends on (``psdif.paths.train_inputs``, the
    list the generated dvc.yaml takes its data dependencies from): the data part of the run key; and of every
    code file this script imports (``psdif.train.code_inputs``): the code part."""
    from psdif.io import md5_file
    from psdif.paths import train_inputs
    from psdif.train import code_inputs

    return {**{d: md5_file(d) for d in train_inputs(variant)}, **code_inputs()}


def run_dir_for(p, variant, inputs: dict, seed: int) -> Path:
    """``data/runs/<variant>-<run key hash>``: another key (seed, params or inputs) is another folder."""
    from psdif.io import params_hash
    from psdif.train import hashed_params

    return Path("data/runs") / f"{variant.name}-{params_hash(hashed_params(p, variant, inputs, seed))}"


def unlabelled() -> bool:
    """Whether the pseudo-labels are the void label of a run without a labeller (your videos without
    pseudolabel.checkpoint). Read from the pseudolabel stage's manifest: the prepared labels this stage depends on
    change with it."""
    from psdif.io import read_json
    from psdif.paths import LABELS_MANIFEST

    return Path(LABELS_MANIFEST).is_file() and read_json(LABELS_MANIFEST).get("labeller") == NO_LABELLER


def not_run(variant, seed: int) -> None:
    """The stage's outputs for a row that cannot train (no labels): a model file that says why (the evaluate
    stage writes 'not run', ``psdif predict`` refuses it), zero steps, an empty DVCLive folder."""
    from psdif.io import save_torch
    from psdif.paths import live_path, model_path, train_metrics_path

    save_torch(Path(model_path(variant.name, seed)), {"not_run": NO_LABELLER_WHY, "variant": {"name": variant.name}})
    live = Path(live_path(variant.name, seed))
    shutil.rmtree(live, ignore_errors=True)
    (live / "plots").mkdir(parents=True)
    write_json(live / "metrics.json", {})
    write_json(Path(train_metrics_path(variant.name, seed)), {"seed": seed, "steps": 0})
    print(f"warning: {variant.name} seed {seed} not run: {NO_LABELLER_WHY}", file=sys.stderr)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    relaunch_under_torchrun(__file__, argv)  # PSDIF_NPROC / PSDIF_NNODES: one process per GPU (DDP)
    p, args = stage_args("train", argv, _args)

    from psdif.data.kitti import read_split
    from psdif.paths import BOUNDARIES, LABELS, PREPARED_MANIFESTS, TRAIN_LIST, live_path, model_path, train_metrics_path
    from psdif.train import LIVE_SNAPSHOT, finished_run, train_run

    variant = get_variant(args.variant)
    seed = p.train.seeds[0] if args.seed is None else args.seed
    if seed < 0:
        raise SystemExit(f"error: --seed {seed} must be >= 0")
    if needs_labels(variant) and unlabelled():
        return not_run(variant, seed)
    # the run key: seed + params + the content of every data and code file this stage depends on
    inputs = run_inputs(variant)
    run_dir = run_dir_for(p, variant, inputs, seed)
    live = Path(live_path(variant.name, seed))
    reused = finished_run(run_dir) is not None
    # DVCLive logs straight into the stage's output folder (curves update during `dvc exp run`); the run
    # folder keeps a copy with each checkpoint, which a resumed run puts back first (psdif.train)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    # one process (group) per run folder: a second `dvc repro` of the same run stops here, naming the first
    lock = folder_lock(run_dir, f"the training run of {variant.name} seed {seed}") if main_rank else nullcontext()
    try:
        with lock:
            result = train_run(p, variant, run_dir, seed=seed, inputs=inputs, labels_root=Path(LABELS),
                               boundary_root=Path(BOUNDARIES), live_dir=live, progress=progress_enabled(),
                               frames=read_split(Path(TRAIN_LIST)), prepared=PREPARED_MANIFESTS)
    except FolderLockedError as exc:
        raise SystemExit(f"error: {exc}") from None
    if not main_rank:
        return
    model = Path(model_path(variant.name, seed))
    with atomic_path(model) as tmp:
        shutil.copyfile(run_dir / "model.pt", tmp)
    if reused:  # no training: the finished run's log, kept in its folder
        shutil.rmtree(live, ignore_errors=True)
        shutil.copytree(run_dir / LIVE_SNAPSHOT, live)
    write_json(Path(train_metrics_path(variant.name, seed)), {
        "seed": seed,
        "steps": result["steps"],
        "minutes": round(result["seconds"] / 60, 2),
        "samples_per_second": round(result["samples_per_second"], 2),
        **{f"loss_{k}": round(float(v), 5) for k, v in result["final_losses"].items()},
    })
    print(f"{variant.name} seed {seed}: {result['steps']} steps -> {model}")


if __name__ == "__main__":
    main()
