"""Issue 21's acceptance benchmark: the generated mini-KITTI as a user's own videos against the KITTI path.

The drives of a finished embedded run are written out as ``.mp4`` clips (OpenCV VideoWriter, camera 02)
with their intrinsics in an OpenCV YAML and nothing else (no OXTS, no velodyne, no labels), and go through
``psdif preset video ... && dvc repro`` twice: with the camera file, and with a guessed ``--hfov 70``. The
labeller is the embedded run's teacher (``data/teacher/teacher.pt``, passed with ``--labels``), and both
paths start from the same encoder weights (the embedded run's ``data/pretrain/*.pt``). The baseline and the
full model of each path are then measured on the same held-out frames against the generator's exact dense
depth (median-scaled, as the Eigen protocol scales, design.md §4.3), beside a constant prediction::

    python bench/video.py --reference-run DIR --out bench/results/video

DIR: a clone of this repository where ``dvc repro`` of the embedded default ran (data/kitti_raw,
data/splits, data/teacher/teacher.pt, data/pretrain/{msfan,resnet18}.pt, models/{baseline,full}/seed<k>/).
Writes ``<out>.md`` (the table, the two acceptance criteria, wall times, the machine) and ``<out>.json``;
the clips and the two scratch repositories stay under ``--work`` (rerunning resumes there: dvc skips what
is done). About 40 minutes on a 2-core CPU (two embedded trainings of two rows each).

Acceptance (issue 21): with the camera file, baseline and full each reach at most 0.6 x the abs_rel of the
constant prediction, and lie within 25% of the KITTI path's abs_rel (|video / KITTI - 1| <= 0.25). The
``--hfov`` column has no threshold: it measures what a wrong field of view costs (the generated rig's is
2 atan(1 / (2 x 0.58)) = 81.5 degrees).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from psdif.camera import Camera, read_camera
from psdif.data import kitti
from psdif.data.images import read_image
from psdif.evaluation.evaluate import dense_gt_paths, predict_sigmoids
from psdif.evaluation.metrics import compute_depth_errors, depth_at
from psdif.io import atomic_path, atomic_write_text, read_json, write_json

ROWS = ("baseline", "full")
SETTINGS = {"camera": "video + camera file", "hfov": "video + --hfov {hfov:g} (guessed)"}
DRIVES_LIST = "synthetic_drives.txt"     # <splits_dir>/: "<date>/<drive> train|val|test" (the generator's)
RECORD = "video_ingest.json"             # in each ingested drive: "clip", "source_frames"
CONSTANT_RATIO = 0.6                     # acceptance: abs_rel <= 0.6 x the constant prediction's
KITTI_TOLERANCE = 0.25                   # acceptance: |abs_rel / KITTI path's - 1| <= 0.25
KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
# sections copied from the reference run into each scratch params.yaml (the same training, only the data differs)
SAME_AS_REFERENCE = ("model", "loss", "train", "eval", "boundary", "prepare", "data.height", "data.width",
                     "data.intrinsics", "data.img_ext")


def say(msg: str) -> None:
    print(f"[video bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ 1. the clips

@dataclass
class Export:
    """What :func:`export_clips` wrote: clip name -> frames, the test clips, the camera, the codec's error."""

    clips: dict[str, int]
    test_clips: list[str]
    camera: Camera
    codec_mae: float                     # mean |decoded - PNG| over every pixel and channel (0-255)


def generated_drives(splits_dir: str | Path) -> list[tuple[str, str]]:
    """``(<date>/<drive>, train|val|test)`` of every generated drive, from the generator's drive list."""
    path = Path(splits_dir) / DRIVES_LIST
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found; is this the splits_dir of a generated (embedded) run?")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if bad := [r for r in rows if len(r) != 2 or r[1] not in ("train", "val", "test")]:
        raise SystemExit(f"error: {path}: lines {bad[:3]} are not '<date>/<drive> train|val|test'")
    return [(folder, role) for folder, role in rows]


def write_camera_yaml(path: Path, cam: Camera) -> None:
    """OpenCV FileStorage YAML as ``calibrateCamera`` users save it (no distortion: KITTI frames are rectified)."""
    mode = cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY | cv2.FILE_STORAGE_FORMAT_YAML
    fs = cv2.FileStorage(path.name, mode)
    fs.write("image_width", int(cam.width))
    fs.write("image_height", int(cam.height))
    fs.write("camera_matrix", cam.K)
    fs.write("distortion_coefficients", np.zeros((5, 1)))
    atomic_write_text(path, fs.releaseAndGetString())


def write_clip(path: Path, frames_rgb: list[np.ndarray], fps: float) -> float:
    """``frames_rgb`` as an mp4v clip at ``fps``; returns the mean |decoded - frame| (the codec's error)."""
    h, w = frames_rgb[0].shape[:2]
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")  # the extension picks the container
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"error: {tmp}: OpenCV cannot write mp4v video here (an OpenCV build without FFmpeg?)")
    for rgb in frames_rgb:
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    cap, errors = cv2.VideoCapture(str(tmp)), []
    while (got := cap.read())[0] and len(errors) < len(frames_rgb):
        errors.append(np.abs(got[1][:, :, ::-1].astype(np.float64) - frames_rgb[len(errors)]).mean())
    cap.release()
    if len(errors) != len(frames_rgb):
        raise SystemExit(f"error: {tmp}: {len(errors)} frames decode back of the {len(frames_rgb)} written")
    os.replace(tmp, path)
    return float(np.mean(errors))


def export_clips(raw_root: str | Path, splits_dir: str | Path, out: str | Path, fps: float = 10) -> Export:
    """Every generated drive (train, val, test) as a user's videos; nothing else is written::

        <out>/clips/<drive>.mp4          camera 02, frame k of the drive = decoded frame k of the clip
        <out>/camera.yaml                OpenCV FileStorage: camera_matrix (P_rect_02's 3x3), zero distortion
        <out>/gt_depth/<drive>/<k:010d>.npy   the generator's exact depth of camera 02 (float32 m, 0 = sky)
    """
    raw_root, out = Path(raw_root), Path(out)
    drives = generated_drives(splits_dir)
    cameras = [read_camera(raw_root / date / "calib_cam_to_cam.txt") for date in sorted({f.split("/")[0]
                                                                                        for f, _ in drives})]
    if len({(c.K.tobytes(), c.width, c.height) for c in cameras}) != 1:
        raise SystemExit(f"error: {raw_root}: the drives' date folders have different intrinsics (one camera file)")
    cam = cameras[0]
    clips, errors = {}, []
    for folder, role in drives:
        name = folder.split("/")[-1]
        pngs = sorted((raw_root / folder / "image_02" / "data").glob("*.png"))
        if [int(p.stem) for p in pngs] != list(range(len(pngs))) or not pngs:
            raise SystemExit(f"error: {raw_root / folder}/image_02/data: frames are not 0 .. n-1 without gaps")
        say(f"export {name} ({role}): {len(pngs)} frames -> clips/{name}.mp4, gt_depth/{name}/")
        errors.append(write_clip(out / "clips" / f"{name}.mp4", [read_image(p) for p in pngs], fps))
        for k in range(len(pngs)):
            depth = kitti.read_depth_png(dense_gt_paths(raw_root, kitti.FrameRef(folder, k, "l"))[0])
            with atomic_path(out / "gt_depth" / name / f"{k:010d}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, depth.astype(np.float32))
        clips[f"{name}.mp4"] = len(pngs)
    write_camera_yaml(out / "camera.yaml", cam)
    test = [f"{f.split('/')[-1]}.mp4" for f, role in drives if role == "test"]
    return Export(clips, test, cam, float(np.mean(errors)))


# ------------------------------------------------------------------------------------------ 2. the errors

def sigmoid_errors(sigmoids, gt_depths, disp_range: tuple[float, float], eval_range: tuple[float, float]) -> dict:
    """Mean over frames of the seven depth metrics, each frame median-scaled (design.md §4.3).

    sigmoids: [h, w] scale-0 sigmoid disparities (any size; resized to the GT as the Eigen protocol does);
    gt_depths: [H, W] metres, 0 = no depth. Evaluated: eval_range[0] < gt < eval_range[1] (the dense GT has no
    crop); the prediction, scaled by median(gt) / median(pred) there, is clamped to eval_range.
    """
    if len(sigmoids) != len(gt_depths) or not len(gt_depths):
        raise ValueError(f"{len(sigmoids)} predictions for {len(gt_depths)} GT maps")
    lo, hi = eval_range
    rows = []
    for i, (sigmoid, gt) in enumerate(zip(sigmoids, gt_depths)):
        gt = np.asarray(gt, dtype=np.float64)
        mask = (gt > lo) & (gt < hi)
        if not mask.any():
            raise ValueError(f"GT map {i}: no pixel in ({lo}, {hi}) m")
        pred = depth_at(sigmoid, gt.shape, disp_range)[mask]
        pred = np.clip(pred * np.median(gt[mask]) / np.median(pred), lo, hi)
        rows.append(compute_depth_errors(gt[mask], pred))
    return {**{k: float(np.mean([r[k] for r in rows])) for k in KEYS}, "n_frames": len(rows)}


def depth_errors(model_path: str | Path, frames_rgb, gt_depths, height: int | None = None, width: int | None = None,
                 *, eval_range: tuple[float, float], batch_size: int = 8) -> dict:
    """:func:`sigmoid_errors` of a trained ``model.pt`` on RGB uint8 frames (resized to height x width, the
    network size; None: its training size, as the evaluate stage feeds it)."""
    import torch

    from psdif.models import load_depth_model

    net, info = load_depth_model(model_path)
    height, width = height or info["height"], width or info["width"]
    with torch.no_grad():
        sigmoids = predict_sigmoids(net, frames_rgb, height, width, batch_size)
    disp_range = (float(info["model_cfg"]["min_depth"]), float(info["model_cfg"]["max_depth"]))
    return sigmoid_errors(sigmoids, gt_depths, disp_range, eval_range)


def constant_errors(gt_depths, *, eval_range: tuple[float, float]) -> dict:
    """The constant prediction (one depth everywhere; after median scaling, median(gt) in each frame)."""
    return sigmoid_errors([np.full((2, 2), 0.5, np.float32)] * len(gt_depths), gt_depths, (0.1, 100.0), eval_range)


# ------------------------------------------------------------------------------------------ 3. the runner

def video_to_generated(video_root: str | Path, frames: list[kitti.FrameRef],
                       drive_of_stem: dict[str, str]) -> list[kitti.FrameRef]:
    """The generated frame each ingested frame was made from: drive = the clip's (``video_ingest.json``
    "clip"), frame = "source_frames"[k] (the decoded index, which export_clips made the drive's frame index)."""
    out, records = [], {}
    for ref in frames:
        if ref.folder not in records:
            path = Path(video_root) / ref.folder / RECORD
            record = read_json(path)
            if not {"clip", "source_frames"} <= set(record):
                raise SystemExit(f"error: {path}: no 'clip' / 'source_frames' (an ingest from before issue 21's)")
            stem = Path(record["clip"]).stem
            if stem not in drive_of_stem:
                raise SystemExit(f"error: {path}: clip {record['clip']!r} is no exported drive")
            records[ref.folder] = (drive_of_stem[stem], record["source_frames"], path)
        drive, source, path = records[ref.folder]
        if not 0 <= ref.frame < len(source):
            raise SystemExit(f"error: {path}: frame {ref.frame} of {ref.folder}, but {len(source)} source_frames")
        out.append(kitti.FrameRef(drive, int(source[ref.frame]), ref.side))
    return out


def dotted(tree: dict, key: str):
    """``tree["a"]["b"]`` for key ``a.b``; None where it is missing."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def set_dotted(tree: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


def align_params(params: dict, ref_params: dict, inputs: Path) -> dict:
    """Make the video preset's ``params`` train as the reference did (:data:`SAME_AS_REFERENCE`), from the
    reference's encoder files copied to ``inputs``; returns each value that changed ``{key: {preset, now}}``."""
    target = json.loads(json.dumps(ref_params))
    target["model"].update(encoder_weights=str(inputs / "msfan.pt"), pose_weights=str(inputs / "resnet18.pt"))
    leaves = []
    for key in SAME_AS_REFERENCE:
        value = dotted(target, key)
        leaves += [f"{key}.{k}" for k in value] if isinstance(value, dict) else [key]
    changed = {}
    for key in leaves:
        if (ours := dotted(params, key)) != dotted(target, key):
            changed[key] = {"preset": ours, "now": dotted(target, key)}
    for key in SAME_AS_REFERENCE:
        set_dotted(params, key, dotted(target, key))
    return changed


def run(cmd: list[str], cwd: Path, env: dict) -> None:
    say(f"$ {' '.join(map(str, cmd))}   (in {cwd})")
    if subprocess.run([str(c) for c in cmd], cwd=cwd, env=env).returncode:
        raise SystemExit(f"error: {' '.join(map(str, cmd))} failed in {cwd} (its output is above)")


def git(*args, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def scratch_repo(reference: Path, dest: Path) -> tuple[str, bool]:
    """A git clone of the reference run's HEAD at ``dest``; returns (commit, fresh). A clone already there is
    kept (dvc resumes it; its wall time is then no timing)."""
    fresh = not (dest / ".git").is_dir()
    if fresh:
        say(f"cloning {reference} (HEAD) into {dest}")
        shutil.rmtree(dest, ignore_errors=True)
        subprocess.run(["git", "clone", "--quiet", str(reference), str(dest)], check=True)
    else:
        say(f"{dest}: an earlier clone, resumed (dvc repro skips what it finished)")
    return git("rev-parse", "HEAD", cwd=dest), fresh


def run_setting(name: str, repo: Path, reference: Path, ref_params: dict, export_dir: Path, inputs: Path,
                test_clips: list[str], hfov: float, fps: float, env: dict) -> dict:
    """``psdif preset video`` then ``dvc repro`` in a scratch clone (timed): the whole pipeline with the camera
    file (what a run on your videos costs, README), only ``evaluate_baseline evaluate_full`` with --hfov."""
    commit, fresh = scratch_repo(reference, repo)
    camera = ["--camera", export_dir / "camera.yaml"] if name == "camera" else ["--hfov", f"{hfov:g}"]
    start = time.perf_counter()
    run([sys.executable, "-m", "psdif.cli", "preset", "video", "--videos", export_dir / "clips", *camera,
         "--gt-depth", export_dir / "gt_depth", "--labels", inputs / "teacher.pt", "--test-clips", ",".join(test_clips),
         "--fps", f"{fps:g}", "--force"], repo, env)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    changed = align_params(params, ref_params, inputs)
    atomic_write_text(repo / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    say(f"{name}: params.yaml set as in the reference run (encoder / pose weights: copies of its pretrain files): "
        + ", ".join(f"{k} {v['preset']!r} -> {v['now']!r}" for k, v in changed.items()))
    repro = time.perf_counter()
    targets = [] if name == "camera" else ["evaluate_baseline", "evaluate_full"]
    run([sys.executable, "-m", "dvc", "repro", *targets], repo, env)
    end = time.perf_counter()
    return {"commit": commit, "repo": str(repo), "set_as_reference": changed, "params": params,
            "repro_targets": targets or "all",
            "preset_s": round(repro - start, 1), "repro_s": round(end - repro, 1), "resumed": not fresh}


def frames_of(root: Path, params: dict) -> list[kitti.FrameRef]:
    data = params["data"]
    return kitti.read_split(root / data["splits_dir"] / data["test_split"] / "test_files.txt")


def train_minutes(root: Path, row: str, seed: int):
    path = root / "metrics" / "train" / row / f"seed{seed}.json"
    return read_json(path).get("minutes") if path.is_file() else None


def measure(reference: Path, ref_params: dict, settings: dict[str, dict]) -> dict:
    """abs_rel etc. of each path's baseline and full model on the test frames all paths share, and of the
    constant prediction, against the generator's dense depth (each path's models on its own images)."""
    ref_root = reference / ref_params["data"]["raw_root"]
    drive_of_stem = {f.split("/")[-1]: f for f, _ in generated_drives(reference / ref_params["data"]["splits_dir"])}
    kitti_frames = frames_of(reference, ref_params)
    video = {}
    for name, s in settings.items():
        refs = frames_of(Path(s["repo"]), s["params"])
        root = Path(s["repo"]) / s["params"]["data"]["raw_root"]
        video[name] = (root, dict(zip(video_to_generated(root, refs, drive_of_stem), refs)))
    common = [f for f in kitti_frames if all(f in m for _, m in video.values())]
    counts = {"kitti_test": len(kitti_frames), **{f"{n}_test": len(m) for n, (_, m) in video.items()},
              "common": len(common)}
    say(f"test frames: {counts}")
    if not common:
        raise SystemExit("error: the KITTI path's and the video path's test frames have none in common")
    gts = [kitti.read_depth_png(dense_gt_paths(ref_root, f)[0]) for f in common]
    eval_range = (float(ref_params["eval"]["min_depth"]), float(ref_params["eval"]["max_depth"]))
    seed = ref_params["train"]["seeds"][0]
    result = {"frames": counts, "seed": seed, "constant": constant_errors(gts, eval_range=eval_range), "paths": {}}
    inputs = {"kitti": (reference, [read_image(kitti.image_path(ref_root, f, ref_params["data"]["img_ext"]))
                                    for f in common])}
    for name, (root, mapping) in video.items():
        images = [read_image(kitti.image_path(root, mapping[f], "png")) for f in common]
        if images[0].shape[:2] != gts[0].shape:
            raise SystemExit(f"error: {root}: ingested frames are {images[0].shape[:2]}, the GT {gts[0].shape}")
        inputs[name] = (Path(settings[name]["repo"]), images)
    for path, (repo, images) in inputs.items():
        for row in ROWS:
            say(f"measuring {path} {row} on {len(common)} frames")
            result["paths"].setdefault(path, {})[row] = depth_errors(
                repo / "models" / row / f"seed{seed}" / "model.pt", images, gts, eval_range=eval_range,
                batch_size=int(ref_params["eval"]["batch_size"]))
            result["paths"][path][row]["train_minutes"] = train_minutes(repo, row, seed)
    return result


# ------------------------------------------------------------------------------------------ 4. the report

def criteria(result: dict) -> list[dict]:
    """The acceptance checks of issue 21 on the camera-file setting, one per (row, criterion)."""
    const, out = result["constant"]["abs_rel"], []
    for row in ROWS:
        video, ref = result["paths"]["camera"][row]["abs_rel"], result["paths"]["kitti"][row]["abs_rel"]
        out.append({"row": row, "criterion": f"abs_rel <= {CONSTANT_RATIO} x constant", "value": video / const,
                    "pass": video <= CONSTANT_RATIO * const})
        out.append({"row": row, "criterion": f"|abs_rel / KITTI path - 1| <= {KITTI_TOLERANCE}",
                    "value": video / ref - 1, "pass": abs(video / ref - 1) <= KITTI_TOLERANCE})
    return out


def table(result: dict, hfov: float) -> str:
    """The markdown report: abs_rel side by side, ratios, the acceptance, wall times and the machine."""
    paths = [("kitti", "KITTI path (data.source: synthetic)")] + [
        (n, SETTINGS[n].format(hfov=hfov)) for n in SETTINGS if n in result["paths"]]
    video = [n for n, _ in paths if n != "kitti"]
    const = result["constant"]["abs_rel"]
    head = ["row"] + [label for _, label in paths] + [f"{n}: ÷ constant" for n in video] + \
        [f"{n}: ÷ KITTI path" for n in video]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in ROWS:
        values = {n: result["paths"][n][row] for n, _ in paths}
        cells = [f"{values[n]['abs_rel']:.4f} (a1 {values[n]['a1']:.3f})" for n, _ in paths]
        cells += [f"{values[n]['abs_rel'] / const:.2f}" for n in video]
        cells += [f"{values[n]['abs_rel'] / values['kitti']['abs_rel']:.2f}" for n in video]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    c = result["constant"]
    lines.append("| constant | " + " | ".join([f"{c['abs_rel']:.4f} (a1 {c['a1']:.3f})"] * len(paths))
                 + " | 1.00" * len(video) + " | –" * len(video) + " |")
    frames = result["frames"]
    lines += ["", f"abs_rel (a1) on the {frames['common']} held-out frames every path tests ({frames}), median-scaled "
              "per frame against the generator's exact dense depth (eval.min_depth < GT < eval.max_depth, no crop); "
              "each path's models see that path's images (the video path: frames decoded from the mp4 clips). "
              f"Seed {result['seed']}.", "", "Acceptance (issue 21, video + camera file):", ""]
    for c in result["criteria"]:
        value = f"{c['value']:+.3f}" if "KITTI" in c["criterion"] else f"{c['value']:.3f} × constant"
        lines.append(f"- {c['row']}: {c['criterion']}: {value} → {'pass' if c['pass'] else 'FAIL'}")
    lines.append(f"- overall: {'PASS' if all(c['pass'] for c in result['criteria']) else 'FAIL'}")
    if "hfov" in result["paths"]:
        cost = [f"{row} {result['paths']['hfov'][row]['abs_rel'] / result['paths']['camera'][row]['abs_rel'] - 1:+.1%}"
                for row in ROWS]
        lines += ["", f"A wrong field of view (--hfov {hfov:g}; the camera file's: {result['true_hfov']:.1f}°) costs, "
                  f"in abs_rel against the camera file: {', '.join(cost)}."]
    t = result["times"]
    lines += ["", "Wall times: export of the clips " + f"{t['export_s'] / 60:.1f} min; " + "; ".join(
        f"{SETTINGS[n].format(hfov=hfov)}: psdif preset {t[n]['preset_s']:.0f} s, "
        + (f"dvc repro {' '.join(t[n]['repro_targets'])}" if isinstance(t[n].get("repro_targets"), list)
           else "dvc repro (the whole pipeline, every Table-3 row)")
        + f" {t[n]['repro_s'] / 60:.1f} min" + (" (resumed: not a timing)" if t[n].get("resumed") else "")
        for n in video) + ". Training minutes (metrics/train): "
        + "; ".join(f"{n} " + ", ".join(f"{row} {result['paths'][n][row]['train_minutes']}" for row in ROWS)
                    for n, _ in paths) + ".", "", f"Machine: {result['machine']}.", ""]
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, {platform.platform()}, Python {platform.python_version()}, " \
           f"torch {torch.__version__}, OpenCV {cv2.__version__}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-run", required=True, type=Path,
                        help="a clone where `dvc repro` of the embedded default ran")
    parser.add_argument("--out", default=Path("bench/results/video"), type=Path, help="writes <out>.md, <out>.json")
    parser.add_argument("--work", type=Path, help="clips and scratch repositories (default: "
                                                  "<reference run>_video_bench beside it)")
    parser.add_argument("--hfov", type=float, default=70.0, help="the guessed field of view of the second setting")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the clips (the generator's: 10)")
    args = parser.parse_args(argv)
    reference = args.reference_run.resolve()
    ref_params = yaml.safe_load((reference / "params.yaml").read_text())
    if ref_params["data"]["source"] != "synthetic":
        raise SystemExit(f"error: {reference}/params.yaml: data.source is {ref_params['data']['source']!r}; the "
                         "reference run is the embedded default (synthetic)")
    seed = ref_params["train"]["seeds"][0]
    needed = [reference / p for p in ("data/teacher/teacher.pt", "data/pretrain/msfan.pt", "data/pretrain/resnet18.pt",
                                      *(f"models/{r}/seed{seed}/model.pt" for r in ROWS))]
    if missing := [str(p) for p in needed if not p.is_file()]:
        raise SystemExit(f"error: the reference run is not finished: missing {missing} (run `dvc repro` there)")
    if not (reference / ".git").exists():
        raise SystemExit(f"error: {reference}: not a git repository (the scratch runs are git clones of it: DVC "
                         "needs one)")
    if dirty := [line for line in git("status", "--porcelain", "--untracked-files=no", cwd=reference).splitlines()
                 if line[3:].startswith(("psdif/", "stages/", "dvc.yaml"))]:
        say(f"warning: {reference} has uncommitted code changes the scratch clones will not have: {dirty}")
    work = (args.work or reference.parent / f"{reference.name}_video_bench").resolve()
    say(f"reference run {reference}; work folder {work}")

    t0 = time.perf_counter()
    say("step 1/4: the generated drives as mp4 clips + camera.yaml + dense depth (nothing else)")
    export = export_clips(reference / ref_params["data"]["raw_root"], reference / ref_params["data"]["splits_dir"],
                          work / "export", args.fps)
    export_s = time.perf_counter() - t0
    say(f"{len(export.clips)} clips, test clips {export.test_clips}, codec error {export.codec_mae:.2f} grey levels")
    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    for src, name in (("data/teacher/teacher.pt", "teacher.pt"), ("data/pretrain/msfan.pt", "msfan.pt"),
                      ("data/pretrain/resnet18.pt", "resnet18.pt")):
        shutil.copyfile(reference / src, inputs / name)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    settings = {}
    for i, name in enumerate(SETTINGS, 2):
        say(f"step {i}/4: {SETTINGS[name].format(hfov=args.hfov)}: psdif preset video + dvc repro "
            "(about 20 minutes on 2 cores)")
        repo = work / name
        settings[name] = run_setting(name, repo, reference, ref_params, work / "export", inputs, export.test_clips,
                                     args.hfov, args.fps, {**env, "PYTHONPATH": str(repo)})
        say(f"{name}: done in {settings[name]['repro_s'] / 60:.1f} min")
    say("step 4/4: measuring every model on the shared test frames")
    result = measure(reference, ref_params, settings)
    result.update(true_hfov=math.degrees(2 * math.atan(export.camera.width / 2 / export.camera.fx)),
                  machine=machine(), export={"clips": export.clips, "test_clips": export.test_clips,
                                             "codec_mae": export.codec_mae},
                  times={"export_s": round(export_s, 1),
                         **{n: {k: s[k] for k in ("preset_s", "repro_s", "resumed", "repro_targets")}
                                                           for n, s in settings.items()}},
                  settings={n: {k: s[k] for k in ("commit", "repo", "set_as_reference")} for n, s in settings.items()})
    result["criteria"] = criteria(result)
    text = table(result, args.hfov)
    atomic_write_text(args.out.with_suffix(".md"), "# Your own videos (issue 21): the acceptance benchmark\n\n" + text)
    write_json(args.out.with_suffix(".json"), result)
    sys.stdout.write(text)
    say(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
