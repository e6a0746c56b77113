"""train stage: one Table-3 variant -> models/<variant>/model.pt, metrics/train/<variant>.json, dvclive/<variant>.

The run lives in data/runs/<variant>-<run key>/ (resumable ``last.pt``); the run key covers the params the
variant reads and the content of every data file the stage depends on (lists, manifests, weight
fingerprints), so an interrupted `dvc repro` resumes where it stopped and a run on other params or other data
starts in another folder. Several GPUs: set
PSDIF_NPROC=N and the stage re-executes itself under torchrun (one process per GPU, DDP).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import yaml

from psdif.stage import stage_args
from psdif.io import progress_enabled
from psdif.io import atomic_path, write_json
from psdif.variants import VARIANTS, get_variant


def _args(parser):
    parser.add_argument("--variant", required=True, choices=list(VARIANTS))


def run_inputs(variant: str, dvc_yaml: str | Path = "dvc.yaml") -> dict[str, str]:
    """``{path: MD5}`` of every data file the variant's train stage depends on in dvc.yaml (lists, raw,
    pseudo-label and boundary manifests, which embed their stage's configuration, weight fingerprints,
    pretrained encoders): the data part of the run key."""
    from psdif.io import md5_file

    deps = yaml.safe_load(Path(dvc_yaml).read_text())["stages"][f"train_{variant}"]["deps"]
    return {d: md5_file(d) for d in deps if d.startswith("data/")}


def run_dir_for(p, variant, inputs: dict) -> Path:
    """``data/runs/<variant>-<run key hash>``: another key (params or inputs) is another folder."""
    from psdif.io import params_hash
    from psdif.train import hashed_params

    return Path("data/runs") / f"{variant.name}-{params_hash(hashed_params(p, variant, inputs))}"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    nproc = int(os.environ.get("PSDIF_NPROC", "1"))
    if nproc > 1 and "RANK" not in os.environ:  # relaunch under torchrun, one process per GPU
        os.execvp(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   f"--nproc_per_node={nproc}", __file__, *argv])
    p, args = stage_args("train", argv, _args)

    from psdif.data.kitti import read_split
    from psdif.paths import TRAIN_LIST
    from psdif.train import train

    variant = get_variant(args.variant)
    inputs = run_inputs(variant.name)
    run_dir = run_dir_for(p, variant, inputs)
    start = time.perf_counter()
    result = train(p, variant, run_dir, labels_root=Path("data/pseudolabels"),
                   boundary_root=Path("data/boundaries"), live_dir=run_dir / "dvclive",
                   progress=progress_enabled(), frames=read_split(Path(TRAIN_LIST)), inputs=inputs)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    model = Path("models") / variant.name / "model.pt"
    with atomic_path(model) as tmp:
        shutil.copyfile(run_dir / "model.pt", tmp)
    live = Path("dvclive") / variant.name
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(run_dir / "dvclive", live)
    write_json(Path("metrics/train") / f"{variant.name}.json", {
        "steps": result.steps,
        "minutes": round((time.perf_counter() - start) / 60, 2),
        "samples_per_second": round(result.samples_per_second, 2),
        **{f"loss_{k}": round(float(v), 5) for k, v in result.final_losses.items()},
    })
    print(f"{variant.name}: {result.steps} steps -> {model}")


if __name__ == "__main__":
    main()
