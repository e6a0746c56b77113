"""The ``psdif`` command and the shared entry of the stage scripts.

    psdif preset embedded|paper     write params.yaml from a preset (the one switch to real KITTI); a
                                    params.yaml that differs is kept as .psdif/backups/params.yaml.<date-time>.bak
    psdif preset video --videos DIR --camera FILE | --hfov DEG
                                    the same pipeline on your own clips (see ``psdif preset -h``)
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


VIDEO_OPTIONS = ("videos", "camera", "hfov", "gt_depth", "labels", "test_clips", "fps")


def set_value(text: str, key: str, value) -> str:
    """``text`` (a params file) with the value of ``section.key`` replaced, its comment kept."""
    import json

    section, name = key.split(".")
    lines, inside = text.splitlines(keepends=True), False
    for i, line in enumerate(lines):
        if not line.startswith((" ", "#")):
            inside = line.split("#")[0].strip() == f"{section}:"
        elif inside and line.startswith(f"  {name}:"):
            head, _, comment = line.rstrip("\n").partition(" #")
            rendered = "null" if value is None else json.dumps(value)
            new = f"  {name}: {rendered}"
            pad = max(len(head), len(new) + 1)
            lines[i] = (f"{new.ljust(pad)} #{comment}" if comment else new) + "\n"
            return "".join(lines)
    raise KeyError(key)


def video_preset(text: str, args) -> str:
    """The video preset with the command line's clips, camera, GT and labeller filled in (checked first)."""
    from psdif.camera import CameraError, read_camera
    from psdif.video import VideoError, find_clips

    if not args.videos:
        raise ParamsError("psdif preset video needs --videos DIR (the folder of your clips)")
    if (args.camera is None) == (args.hfov is None):
        raise ParamsError("psdif preset video needs the camera: --camera FILE (a calibration; `psdif calibrate` "
                          "makes one) or, when nothing better is known, --hfov DEGREES (a guess the tables report)")
    try:
        clips = find_clips(args.videos)
        if args.camera:
            read_camera(args.camera)
    except (VideoError, CameraError) as exc:
        raise ParamsError(str(exc)) from None
    if not clips:
        raise ParamsError(f"{args.videos}: no clip (.mp4 .mov .mkv .avi files, or folders of numbered images)")
    names = {c.name for c in clips}
    test = [c.strip() for c in args.test_clips.split(",") if c.strip()] if args.test_clips else []
    if unknown := [c for c in test if c not in names]:
        raise ParamsError(f"--test-clips: {unknown} not in {args.videos} (clips: {', '.join(sorted(names))})")
    for option, folder in (("--gt-depth", args.gt_depth), ("--labels", args.labels)):
        if folder and not Path(folder).exists():
            raise ParamsError(f"{option} {folder}: not found")
    def rel(path):  # params paths are read from the params file's folder (where `dvc repro` runs)
        return path if path is None or Path(path).is_absolute() else \
            os.path.relpath(Path(path).resolve(), Path(args.output).resolve().parent)

    values = {"video.clips": rel(args.videos), "video.camera": rel(args.camera), "video.hfov": args.hfov,
              "video.gt_depth": rel(args.gt_depth), "video.test_clips": test,
              "data.test_protocol": "eigen_benchmark" if args.gt_depth else "photometric",
              "pseudolabel.checkpoint": rel(args.labels)}
    if args.fps is not None:
        values["video.fps"] = args.fps
    for key, value in values.items():
        text = set_value(text, key, value)
    print(f"{len(clips)} clips in {args.videos}" + (f", {len(test)} held out for testing" if test else ""))
    if args.hfov is not None:
        print(f"warning: the intrinsics are guessed from --hfov {args.hfov}; every table will say so")
    if not args.labels:
        print("note: no labeller (--labels): the semantic rows of Table 3 (msfan_seg, msfan_seg_psdifm, full) need "
              "pseudo-labels: give --labels with the Cityscapes DeepLabv3+/ResNet-101 checkpoint")
    return text


def cmd_preset(args) -> int:
    src = preset_path(args.name)
    dest = Path(args.output)
    given = [o for o in VIDEO_OPTIONS if getattr(args, o) is not None]
    if args.name != "video" and given:
        raise ParamsError(f"--{given[0].replace('_', '-')} is an option of `psdif preset video`, not of {args.name}")
    text = src.read_text()
    if args.name == "video":
        text = video_preset(text, args)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(text)
    try:
        load_params(tmp)  # a preset must always validate
    except ParamsError as exc:
        tmp.unlink()
        raise exc
    if dest.exists() and not args.force and dest.read_text() != text:
        backup = backup_path(dest)
        shutil.copyfile(dest, backup)
        print(f"kept the previous {dest} as {backup} (restore it with: mv {backup} {dest})")
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
    v = p.add_argument_group("video (your own clips; README, 'Your own videos')")
    v.add_argument("--videos", metavar="DIR", help="folder of clips (.mp4 .mov .mkv .avi, or folders of images)")
    v.add_argument("--camera", metavar="FILE", help="camera file (OpenCV YAML/XML, ROS camera_info, KITTI calib)")
    v.add_argument("--hfov", type=float, metavar="DEG", help="guessed horizontal field of view, without a camera file")
    v.add_argument("--gt-depth", metavar="DIR", help="optional depth GT: DIR/<clip stem>/<k:010d>.png|.npy")
    v.add_argument("--labels", metavar="CKPT", help="labeller: Cityscapes DeepLabv3+/ResNet-101 .pth or a psdif "
                                                    "teacher.pt (without one only the non-semantic rows run)")
    v.add_argument("--test-clips", metavar="A,B", help="clips held out for testing (default: video.test_fraction)")
    v.add_argument("--fps", type=float, help="sampling rate (default 10, KITTI's)")
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
