"""``psdif predict``: depth for image files, folders of images or video files, with a trained ``model.pt``.

    psdif predict INPUT [INPUT ...] --model models/full/seed0/model.pt --out OUTDIR [--scale FACTOR]

Each input image (or video frame) of any size is resized to the model's training size, its scale-0
sigmoid disparity predicted in batches (:func:`psdif.evaluation.evaluate.predict_sigmoids`), resized back to the
input's own size (bilinear, on disparity, as the Eigen protocol does) and turned into depth with
:func:`psdif.geometry.disp_to_depth` (the model's min/max depth). Per input it writes

    OUTDIR/<name>_depth.png   colour map of the disparity (near = bright)
    OUTDIR/<name>_depth.npy   float32 [H, W]: relative depth × --scale (1.0 = relative, no unit)
    OUTDIR/<stem>_depth.mp4   per video input: RGB | colourised disparity side by side, same frame rate

``psdif predict --kitti-benchmark FOLDER --model model.pt --out OUTDIR --scale FACTOR`` writes instead the
KITTI depth prediction benchmark's submission: ``OUTDIR/<stem>.png`` for each image of FOLDER (named like
it, at its size: 1216 × 352 for the benchmark's test images), uint16 = depth in metres × 256, rounded,
depth clipped to [1/256, 80] m so that no valid prediction writes 0 (the benchmark's "no depth"), and
``OUTDIR/kitti_benchmark_submission.zip`` holding them. Metres = relative depth × --scale (required).

``<name>`` is the file stem (``<stem>_%06d`` per video frame, counted from 0). Images and videos write
different files (``good.png`` -> ``good_depth.*``, ``good.mp4`` -> ``good_000000_depth.*``), so they never
clash with each other by stem. Inputs of one kind whose stems clash get just enough to tell them apart:
the extension when they share a folder (``x.png``, ``x.jpg`` -> ``x_png``, ``x_jpg``), parent-folder
names when they do not (``a/0001.png``, ``b/0001.png`` -> ``a_0001``, ``b_0001``). A clash nothing
resolves (an image named like a video frame, ``clip_000001.png`` beside ``clip.mp4``) is an error.

Bad inputs (missing path, unsupported extension, corrupt or truncated image, image larger than
``--max-megapixels``, video that cannot be opened, folder without images) are never skipped silently.
Choice made here: every good input is still predicted, each bad one is reported on stderr by name as
soon as it is found, and the command ends with the list of bad inputs and exit status 1 (``--strict``:
every image is decoded and every video opened first, and nothing is predicted if any fails).
Exit status 2: nothing predicted because of the command line (``--out`` a file, ...), the model file,
a name clash, or a full disk.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from psdif.io import DiskFullError, atomic_path, join_under

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch, cv2 and the models are imported inside the functions that use them, so that registering this
# subcommand keeps every other `psdif` command (preset, check-params, dvc-yaml) quick to start.

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv")
MAX_MEGAPIXELS = 100.0  # default --max-megapixels: larger images are bad inputs (decompression bombs)


class PredictError(Exception):
    """A problem that stops ``psdif predict`` before anything is predicted (exit status 2)."""


@dataclass(frozen=True)
class Source:
    """One input to predict: an image file or a video file; ``name`` is its output base name."""

    path: Path
    kind: str  # "image" | "video"
    name: str = ""
    frames: int = 0  # video: frame count the container reports (0 = unknown); image: 1


@dataclass
class Inputs:
    """What the command line names: sources to predict, bad inputs (``"path: why"``) and notes."""

    sources: list[Source] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- listing inputs
def _probe_video(path: Path) -> tuple[int, str | None]:
    """(reported frame count, None) for a video whose first frame decodes, else (0, why)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, "cannot open the video (missing codec or not a video file)"
        ok, frame = cap.read()
        if not ok or frame is None:
            return 0, "the video opens but no frame decodes (empty or corrupt file)"
        return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0), None
    finally:
        cap.release()


def _add_file(path: Path, inputs: Inputs, seen: set[Path]) -> None:
    key = path.resolve()
    if key in seen:
        inputs.notes.append(f"{path}: named more than once; predicted once")
        return
    seen.add(key)
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        inputs.sources.append(Source(path, "image", frames=1))
    elif ext in VIDEO_EXTS:
        count, why = _probe_video(path)
        if why:
            inputs.problems.append(f"{path}: {why}")
        else:
            inputs.sources.append(Source(path, "video", frames=count))
    else:
        inputs.problems.append(f"{path}: unsupported extension {path.suffix or '(none)'!r}; images: "
                               f"{', '.join(IMAGE_EXTS)}; videos: {', '.join(VIDEO_EXTS)}")


def _add_folder(folder: Path, recursive: bool, inputs: Inputs, seen: set[Path]) -> None:
    entries = sorted(folder.rglob("*") if recursive else folder.iterdir())
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
    if not images:
        inputs.problems.append(f"{folder}: folder without {'/'.join(IMAGE_EXTS)} images"
                               + ("" if recursive else " (add --recursive to search its subfolders)"))
        return
    for p in images:
        _add_file(p, inputs, seen)
    ignored = len(files) - len(images)
    subdirs = 0 if recursive else sum(p.is_dir() for p in entries)
    if ignored or subdirs:
        inputs.notes.append(f"{folder}: predicted {len(images)} images; ignored {ignored} other files"
                            + (f" and {subdirs} subfolders (--recursive includes them)" if subdirs else ""))


def collect_inputs(paths: list[str | Path], recursive: bool = False) -> Inputs:
    """Expand files and folders (sorted, images only; subfolders with ``recursive``) into sources.

    Missing paths, unsupported extensions, unopenable videos and image-less folders become
    ``problems`` naming the path; sources get their output names (:func:`assign_names`).
    """
    inputs, seen = Inputs(), set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _add_folder(path, recursive, inputs, seen)
        elif path.is_file():
            _add_file(path, inputs, seen)
        else:
            inputs.problems.append(f"{path}: no such file or folder")
    names = assign_names([s.path for s in inputs.sources], [s.kind for s in inputs.sources])
    inputs.sources = [Source(s.path, s.kind, n, s.frames) for s, n in zip(inputs.sources, names)]
    return inputs


def assign_names(paths: list[Path], kinds: list[str] | None = None) -> list[str]:
    """Output base names, unique within each kind (images write ``<name>_depth.*``, videos
    ``<name>_%06d_depth.*``): the stem; ``<stem>_<ext>`` for inputs of one kind sharing folder and stem
    (``x.png``, ``x.jpg``); then just enough parent-folder names as prefix to be unique.

    Raises :class:`PredictError` naming the files when nothing separates them, or when an image name
    equals a video frame name ``<video>_%06d``.
    """
    kinds = kinds or ["image"] * len(paths)
    full = [p.resolve() for p in paths]
    levels = [0] * len(paths)
    same_stem: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(full):
        same_stem[(kinds[i], f.parent, f.stem)].append(i)
    base = [f.stem for f in full]
    for group in same_stem.values():
        if len(group) > 1:  # x.png beside x.jpg: only the extension tells them apart
            for i in group:
                base[i] = f"{full[i].stem}_{full[i].suffix.lstrip('.').lower()}"

    def name(i: int) -> str:
        parents = [part for part in full[i].parent.parts if part != full[i].anchor]
        return "_".join(parents[len(parents) - levels[i]:] + [base[i]]) if levels[i] else base[i]

    names = list(base)
    while True:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, n in enumerate(names):
            groups[(kinds[i], n)].append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        for group in clashes:
            deeper = [i for i in group if levels[i] < len(full[i].parent.parts) - 1]
            if not deeper:
                files = ", ".join(str(paths[i]) for i in group)
                raise PredictError(f"inputs {files} would all be written as {names[group[0]]}_depth.*: "
                                   "rename one of them or predict them into different --out folders")
            for i in deeper:
                levels[i] += 1
                names[i] = name(i)
    frame_name = {n: re.compile(re.escape(n) + r"_\d{6}") for n, k in zip(names, kinds) if k == "video"}
    for i, n in enumerate(names):
        for video, pattern in frame_name.items():
            if kinds[i] == "image" and pattern.fullmatch(n):
                raise PredictError(f"{paths[i]} would overwrite a frame of video {video!r} ({n}_depth.*): "
                                   "rename it or predict it into a different --out folder")
    return names


# ---------------------------------------------------------------------------------------------- reading
def read_rgb(path: str | Path, max_pixels: int | None = int(MAX_MEGAPIXELS * 1e6)) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB, EXIF orientation applied, fully decoded.

    Raises :class:`psdif.data.images.ImageError` (a ValueError) naming the file for a missing, corrupt or
    truncated file and for one of more than ``max_pixels`` pixels (PIL's decompression-bomb guard too).
    """
    from psdif.data.images import read_image

    return read_image(path, exif=True, max_pixels=max_pixels,
                      hint="check the file, or leave it out of the inputs")


def check_images(sources: list[Source], max_pixels: int | None) -> list[str]:
    """``--strict``: decode every image source now; returns ``"path: why"`` for each that fails."""
    problems = []
    for src in sources:
        if src.kind == "image":
            try:
                read_rgb(src.path, max_pixels)
            except ValueError as exc:
                problems.append(str(exc))
    return problems


def iter_frames(sources: list[Source], problems: list[str], report: Callable[[str], None],
                max_pixels: int | None = int(MAX_MEGAPIXELS * 1e6)) -> Iterator[tuple[str, np.ndarray, Source]]:
    """(output name, RGB uint8 [H, W, 3], its source) for every image and video frame, in input order.

    An image that does not decode (or is larger than ``max_pixels``) is appended to ``problems`` (and
    reported) instead of stopping the run; a video that ends before the frame count its container reports
    is reported as a note.
    """
    import cv2

    for src in sources:
        if src.kind == "image":
            try:
                yield src.name, read_rgb(src.path, max_pixels), src
            except ValueError as exc:
                problems.append(str(exc))
                report(f"error: {exc}")
            continue
        cap = cv2.VideoCapture(str(src.path))
        index = 0
        try:
            while True:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                yield f"{src.name}_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), src
                index += 1
        finally:
            cap.release()
        if index == 0:
            problems.append(f"{src.path}: no frame decodes")
            report(f"error: {src.path}: no frame decodes")
        elif src.frames and index < src.frames:
            report(f"note: {src.path}: decoded {index} frames of the {src.frames} its container reports")


# ------------------------------------------------------------------------------------------- prediction
def depth_from_sigmoid(sigmoid: np.ndarray, height: int, width: int, min_depth: float, max_depth: float,
                       scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Network-size sigmoid [h, w] -> (sigmoid [height, width], depth float32 [height, width]).

    Bilinear resize of the disparity to the input size (as the Eigen protocol does; the sigmoid ->
    disparity map is affine, so resizing either is the same), then ``scale · disp_to_depth`` (design.md §3).
    """
    import cv2
    import torch

    from psdif.geometry import disp_to_depth

    full = cv2.resize(sigmoid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    depth = disp_to_depth(torch.from_numpy(full), min_depth, max_depth)[1].numpy() * np.float32(scale)
    return full, depth.astype(np.float32)


def write_outputs(out_dir: Path, name: str, sigmoid: np.ndarray, depth: np.ndarray,
                  png: bool = True, npy: bool = True) -> list[Path]:
    """Atomically write ``<name>_depth.png`` (magma colour map of disparity) and ``<name>_depth.npy``."""
    import cv2

    from psdif.evaluation.evaluate import colourise

    written = []
    if png:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(colourise(sigmoid), cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError(f"{out_dir / name}_depth.png: PNG encoding failed")
        path = join_under(out_dir, f"{name}_depth.png", what="depth map")
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.tobytes())
        written.append(path)
    if npy:
        path = join_under(out_dir, f"{name}_depth.npy", what="depth array")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, depth)
        written.append(path)
    return written


class DepthVideo:
    """``<name>_depth.mp4`` of one video input: each frame the RGB frame and its colourised disparity side by
    side (2x the width), at the input's frame rate (cv2.VideoWriter, mp4v). Written to a hidden partial file
    and renamed by :meth:`close`, so an interrupted run leaves no half video under the final name."""

    FALLBACK_FPS = 25.0  # a container that reports no frame rate

    def __init__(self, out_dir: Path, src: Source):
        import cv2

        self.path = join_under(out_dir, f"{src.name}_depth.mp4", what="depth video")
        self.partial = self.path.with_name(f".{self.path.stem}.partial.mp4")
        cap = cv2.VideoCapture(str(src.path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        self.fps = fps if math.isfinite(fps) and fps > 0 else self.FALLBACK_FPS
        self.writer = None

    def add(self, rgb: np.ndarray, sigmoid: np.ndarray) -> None:
        """rgb uint8 [H, W, 3], sigmoid [H, W] (input size) -> one frame [H, 2W, 3]."""
        import cv2

        from psdif.evaluation.evaluate import colourise

        frame = np.concatenate([rgb, colourise(sigmoid)], axis=1)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise RuntimeError(f"{self.path}: OpenCV cannot write an mp4v video here")
        self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self, keep: bool = True) -> Path | None:
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        if keep:
            self.partial.replace(self.path)
            return self.path
        self.partial.unlink(missing_ok=True)
        return None


def predict_sources(net: nn.Module, info: dict, sources: list[Source], out_dir: str | Path, *,
                    scale: float = 1.0, batch_size: int = 8, post_process: bool = False,
                    device: str | torch.device = "cpu", png: bool = True, npy: bool = True,
                    progress: bool = False, report: Callable[[str], None] = print,
                    max_pixels: int | None = int(MAX_MEGAPIXELS * 1e6),
                    write: Callable[[Path, str, np.ndarray, np.ndarray], object] | None = None) -> tuple[int, list[str]]:
    """Predict every source in batches of ``batch_size`` and write its outputs into ``out_dir``.

    ``info``: from :func:`psdif.models.load_depth_model` (height, width, model_cfg min/max_depth).
    A video input also gets ``<name>_depth.mp4`` (:class:`DepthVideo`).
    ``write(out_dir, name, sigmoid [H, W], depth [H, W])``: the writer (default: :func:`write_outputs`).
    Returns (number of images / frames written, problems found while decoding).
    """
    from tqdm import tqdm

    from psdif.evaluation.evaluate import predict_sigmoids

    out_dir = Path(out_dir)
    height, width = int(info["height"]), int(info["width"])
    min_depth, max_depth = float(info["model_cfg"]["min_depth"]), float(info["model_cfg"]["max_depth"])
    problems: list[str] = []
    counts = [s.frames for s in sources]
    total = sum(counts) if all(counts) else None
    done = 0
    frames = iter_frames(sources, problems, report, max_pixels)
    videos: dict[Path, DepthVideo] = {}
    try:
        with tqdm(total=total, desc="predict", unit="img", disable=not progress) as bar:
            while chunk := [item for _, item in zip(range(batch_size), frames)]:
                names, images, srcs = zip(*chunk)
                sigmoids = predict_sigmoids(net, images, height, width, batch_size, post_process, device)
                for name, image, src, sig in zip(names, images, srcs, sigmoids):
                    full, depth = depth_from_sigmoid(sig, *image.shape[:2], min_depth, max_depth, scale)
                    if write is None:
                        write_outputs(out_dir, name, full, depth, png, npy)
                    else:
                        write(out_dir, name, full, depth)
                    if src.kind == "video":
                        if src.path not in videos:
                            videos[src.path] = DepthVideo(out_dir, src)
                        videos[src.path].add(image, full)
                done += len(chunk)
                bar.update(len(chunk))
    except BaseException:
        for video in videos.values():
            video.close(keep=False)
        raise
    for video in videos.values():
        video.close()
    return done, problems


# ------------------------------------------------------------------------------------ KITTI benchmark export
BENCHMARK_MAX_DEPTH = 80.0  # m: the cap of KITTI's depth evaluation (Monodepth2's benchmark export clips the same)
BENCHMARK_ZIP = "kitti_benchmark_submission.zip"


def benchmark_png(depth: np.ndarray, max_depth: float = BENCHMARK_MAX_DEPTH) -> np.ndarray:
    """Depth [H, W] m -> the KITTI depth benchmark's uint16 ``round(depth · 256)``.

    Depth is clipped to [1/256, max_depth] m first: 0 means "no prediction" to the benchmark, so a valid
    prediction never writes it (a non-finite depth counts as far: max_depth).
    """
    depth = np.nan_to_num(np.asarray(depth, dtype=np.float64), nan=max_depth, posinf=max_depth, neginf=max_depth)
    depth = np.clip(depth, 1.0 / 256.0, max_depth)
    return np.clip(np.round(depth * 256.0), 1, 65535).astype(np.uint16)


def write_benchmark_png(out_dir: Path, name: str, sigmoid: np.ndarray, depth: np.ndarray) -> Path:
    """Atomically write ``<name>.png``: :func:`benchmark_png` of ``depth`` (16-bit greyscale, input size)."""
    import cv2

    ok, buf = cv2.imencode(".png", benchmark_png(depth))
    if not ok:
        raise RuntimeError(f"{out_dir / name}.png: PNG encoding failed")
    path = join_under(out_dir, f"{name}.png", what="benchmark depth PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path


def benchmark_sources(folder: str | Path) -> Inputs:
    """The images of a KITTI benchmark test folder (``test_depth_prediction_anonymous/image``), each output
    under its own stem (``0000000000.png`` -> ``0000000000.png``): a stem that two images share is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"--kitti-benchmark {folder}: not a folder; give the folder of the benchmark's test "
                           "images (test_depth_prediction_anonymous/image)")
    inputs = collect_inputs([folder])
    renamed = [s.path.name for s in inputs.sources if s.name != s.path.stem]
    if renamed:
        raise PredictError(f"--kitti-benchmark {folder}: images {', '.join(renamed)} share a name (stem) with "
                           "another image; the submission needs one <stem>.png per image: remove the duplicate")
    return inputs


def write_submission_zip(out_dir: Path, pngs: list[Path]) -> Path:
    """``out_dir/kitti_benchmark_submission.zip``: the PNGs at the top level (the upload format), atomically."""
    import zipfile

    path = Path(out_dir) / BENCHMARK_ZIP
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for png in sorted(pngs):
            zf.write(png, png.name)
    return path


def load_model(path: str | Path, device: str) -> tuple[nn.Module, dict]:
    """:func:`psdif.models.load_depth_model`, with every failure a :class:`PredictError` naming the file."""
    from psdif.models import load_depth_model

    path = Path(path)
    try:
        net, info = load_depth_model(path, device)
    except Exception as exc:  # missing, truncated, crafted, other architecture, other config schema
        msg = " ".join((str(exc) if str(path) in str(exc) else f"{path}: {exc}").split())
        if "weights_only" in msg or "torch.load" in msg:  # torch's advice would run the file's code: not ours
            from psdif.torchfile import torch_load_problem
            msg = torch_load_problem(path, exc)
        msg = msg if len(msg) <= 300 else msg[:300] + " ...)"
        raise PredictError(f"{msg}; pass a model.pt written by `dvc repro` "
                           "(models/<variant>/seed<k>/model.pt)") from None
    cfg = info.get("model_cfg") or {}
    if not info.get("height") or not info.get("width") or "min_depth" not in cfg or "max_depth" not in cfg:
        raise PredictError(f"{path}: the checkpoint lacks the training size or depth range "
                           "(height, width, model_cfg.min_depth/max_depth); re-train with `dvc repro`")
    return net, info


# -------------------------------------------------------------------------------------------- command line
def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise PredictError("--device cuda: no CUDA device is available to torch; use --device cpu")
    return name


def _check_args(args) -> None:
    if args.kitti_benchmark and args.inputs:
        raise PredictError(f"--kitti-benchmark predicts the images of its folder; drop the inputs "
                           f"{' '.join(args.inputs)} (or predict them in another run)")
    if not args.kitti_benchmark and not args.inputs:
        raise PredictError("nothing to predict: give INPUT files / folders, or --kitti-benchmark FOLDER")
    if args.kitti_benchmark and args.scale is None:
        raise PredictError("--kitti-benchmark needs --scale FACTOR (metres per unit of the network's relative "
                           "depth): the benchmark scores metric depth; e.g. ratio_median of "
                           "metrics/eval/<variant>.json (README, 'KITTI benchmark submission')")
    if args.scale is None:
        args.scale = 1.0
    if not math.isfinite(args.scale) or args.scale <= 0:
        raise PredictError(f"--scale {args.scale}: must be a positive finite factor")
    if args.batch_size < 1:
        raise PredictError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.no_png and args.no_npy:
        raise PredictError("--no-png with --no-npy leaves nothing to write; drop one of them")
    if not math.isfinite(args.max_megapixels) or args.max_megapixels <= 0:
        raise PredictError(f"--max-megapixels {args.max_megapixels}: must be a positive number")
    out = Path(args.out)
    for folder in (out, *out.parents):  # the first existing one must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise PredictError(f"--out {out}: {folder} exists and is not a folder; give a folder "
                                   "(created if missing) for the <name>_depth.png/.npy outputs")
            break


def cmd_predict(args) -> int:
    """Run ``psdif predict``; exit status 0 = all inputs written, 1 = some bad inputs, 2 = nothing run."""
    from psdif.io import progress_enabled

    from tqdm import tqdm

    def err(msg: str) -> None:
        tqdm.write(msg, file=sys.stderr)  # keeps a running progress bar intact

    try:
        _check_args(args)
        device = _device(args.device)
        inputs = benchmark_sources(args.kitti_benchmark) if args.kitti_benchmark else collect_inputs(args.inputs,
                                                                                                     args.recursive)
        for note in inputs.notes:
            err(f"note: {note}")
        for problem in inputs.problems:
            err(f"error: {problem}")
        max_pixels = int(args.max_megapixels * 1e6)
        if args.strict:  # every image must decode before anything is predicted
            decoding = check_images(inputs.sources, max_pixels)
            for problem in decoding:
                err(f"error: {problem}")
            if inputs.problems or decoding:
                err(f"--strict: {len(inputs.problems) + len(decoding)} bad input(s); nothing predicted")
                return 1
        net, info = load_model(args.model, device)
    except PredictError as exc:
        err(f"error: {exc}")
        return 2
    pngs: list[Path] = []

    def benchmark(out_dir, name, sigmoid, depth):
        pngs.append(write_benchmark_png(out_dir, name, sigmoid, depth))

    try:
        written, problems = predict_sources(
            net, info, inputs.sources, args.out, scale=args.scale, batch_size=args.batch_size,
            post_process=args.post_process, device=device, png=not args.no_png, npy=not args.no_npy,
            progress=progress_enabled(), report=err, max_pixels=max_pixels,
            write=benchmark if args.kitti_benchmark else None)
        bad = inputs.problems + problems
        if args.kitti_benchmark and pngs and not bad:
            print(f"wrote {write_submission_zip(Path(args.out), pngs)} ({len(pngs)} PNGs, ready to upload)")
    except DiskFullError as exc:
        err(f"error: {exc}")
        return 2
    what = "KITTI benchmark PNG(s), uint16 metres x 256" if args.kitti_benchmark else "depth map(s)"
    unit = "metres" if args.kitti_benchmark else "depth"
    print(f"wrote {written} {what} to {args.out} (model {args.model}: variant {info['variant']}, "
          f"{info['height']}x{info['width']}; {unit} = relative x {args.scale:g})")
    if bad:
        err(f"{len(bad)} bad input(s), not predicted:")
        for problem in bad:
            err(f"  {problem}")
        return 1
    return 0


SCALE_HELP = ("multiply the relative depth written to .npy (or to the --kitti-benchmark PNGs, where it is "
              "required) by FACTOR (default 1.0: relative depth, no unit). "
              "Self-supervised monocular depth is known only up to an unknown global scale; a metric factor "
              "(e.g. one fitted by median scaling against LiDAR on your own data, or from a known camera "
              "height) is yours to supply. The PNG is unaffected.")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``psdif predict`` on the ``psdif`` command's subparsers."""
    p = sub.add_parser("predict", help="depth maps for images, folders or videos with a trained model.pt",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help=f"image files ({', '.join(IMAGE_EXTS)}), folders of images, video files "
                        f"({', '.join(VIDEO_EXTS)})")
    p.add_argument("--kitti-benchmark", metavar="FOLDER",
                   help="write the KITTI depth prediction benchmark's submission instead: for each image of FOLDER "
                        "one 16-bit PNG of the same name, at its size, depth in metres x 256 (clipped to "
                        f"[1/256, {BENCHMARK_MAX_DEPTH:g}] m), and {BENCHMARK_ZIP}; needs --scale")
    p.add_argument("--model", default="models/full/seed0/model.pt",
                   help="trained checkpoint of any variant and seed (default: models/full/seed0/model.pt)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--scale", type=float, default=None, metavar="FACTOR", help=SCALE_HELP)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--post-process", action="store_true",
                   help="also predict the mirrored image and blend (Monodepth flip post-processing; 2x cost)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available (default)")
    p.add_argument("--recursive", action="store_true", help="include images in subfolders of folder inputs")
    p.add_argument("--strict", action="store_true",
                   help="decode every image and open every video first; predict nothing if any input is "
                        "missing, unsupported, corrupt or too large (default: predict the good ones, list "
                        "the bad ones, exit 1)")
    p.add_argument("--max-megapixels", type=float, default=MAX_MEGAPIXELS, metavar="MP",
                   help=f"images larger than this are bad inputs, not decoded (default {MAX_MEGAPIXELS:g}; "
                        "PIL refuses more than about 179 MP in any case)")
    p.add_argument("--no-png", action="store_true", help="skip the colour PNGs")
    p.add_argument("--no-npy", action="store_true", help="skip the .npy depth arrays")
    p.set_defaults(func=cmd_predict)
    return p
