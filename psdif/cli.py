"""The ``psdif`` command and the shared entry of the stage scripts.

    psdif preset embedded|paper     write params.yaml from a preset (the one switch to real KITTI); a
                                    params.yaml that differs is kept as .psdif/backups/params.yaml.<date-time>.bak
    psdif check-params [FILE]       validate params.yaml (every stage also does this at start)
    psdif check [FILE]              what the check stage checks: params.yaml and every file it names (opened
                                    as its stage will), writing nothing; use it after a failed `dvc exp run -S`
    psdif dvc-yaml                  regenerate dvc.yaml (which stage reads which params and files)
    psdif predict ...               depth for images, folders or a video (see ``psdif predict -h``)
    psdif calibrate VIDEO ...       camera intrinsics from a checkerboard video (see ``psdif calibrate -h``)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path

from psdif.config import ParamsError, load_params, preset_path


BACKUPS = Path(".psdif") / "backups"  # beside params.yaml, out of the repository root (git ignores .psdif/)


def backup_path(dest: Path, now: datetime | None = None) -> Path:
    """A new, unused ``.psdif/backups/<dest name>.<YYYYmmdd-HHMMSS>[-N].bak`` in ``dest``'s folder, created
    empty (never an old one)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    folder = dest.parent / BACKUPS
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        backup = folder / f"{dest.name}.{stamp}{f'-{n}' if n else ''}.bak"
        try:
            with open(backup, "x"):  # exclusive create: an existing backup is never reused
                return backup
        except FileExistsError:
            continue
    raise ParamsError(f"{dest}: 10000 backups from {stamp} already exist; remove some")


def cmd_preset(args) -> int:
    src = preset_path(args.name)
    dest = Path(args.output)
    load_params(src)  # a preset must always validate
    if dest.exists() and not args.force and dest.read_text() != src.read_text():
        backup = backup_path(dest)
        shutil.copyfile(dest, backup)
        print(f"kept the previous {dest} as {backup} (restore it with: mv {backup} {dest})")
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    print(f"wrote {dest} from preset {args.name!r}; run `dvc repro`")
    return 0


def cmd_check(args) -> int:
    try:
        load_params(args.file)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    return 0


def cmd_check_all(args) -> int:
    from psdif.inputs import check

    return check(args.file, write=False)


def cmd_dvc_yaml(args) -> int:
    from psdif import pipeline

    print(f"wrote {pipeline.write(args.output)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="psdif", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from psdif import __version__

    parser.add_argument("--version", action="version", version=f"psdif {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    presets = sorted(p.stem for p in preset_path("embedded").parent.glob("*.yaml"))
    p = sub.add_parser("preset", help=f"write params.yaml from a preset ({' | '.join(presets)})",
                       description="Write params.yaml from a preset. embedded: the generated mini-KITTI, small "
                                   "networks for a CPU; paper: real KITTI and the paper's settings (section 4.2).")
    p.add_argument("name", choices=presets, help="the preset: " + ", ".join(presets))
    p.add_argument("-o", "--output", default="params.yaml")
    p.add_argument("--force", action="store_true", help="overwrite without keeping a timestamped .bak copy")
    p.set_defaults(func=cmd_preset)
    p = sub.add_parser("check-params", help="validate a params file")
    p.add_argument("file", nargs="?", default="params.yaml")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("check", help="validate a params file and open every file it names (the check stage)")
    p.add_argument("file", nargs="?", default="params.yaml")
    p.set_defaults(func=cmd_check_all)
    p = sub.add_parser("dvc-yaml", help="regenerate dvc.yaml from psdif/pipeline.py")
    p.add_argument("-o", "--output", default="dvc.yaml")
    p.set_defaults(func=cmd_dvc_yaml)
    from psdif import calibrate, export, predict

    predict.add_parser(sub)
    export.add_parser(sub)
    calibrate.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
