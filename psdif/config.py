"""Typed schema of ``params.yaml``, validated at every stage start.

Every value that changes a result lives in ``params.yaml`` (DVC tracks it); the dataclasses below carry
no defaults on purpose, so nothing hides in code. Validation rejects unknown keys naming the nearest valid
one (``loss.mu33`` -> "did you mean loss.mu3?"), wrong types, non-finite numbers (``.nan``, ``.inf``,
``1e400``), empty strings, out-of-range values, and combinations that would only fail (or silently do
nothing) hours later: min >= max depth ranges, metric-loss scales the decoder does not have, a boundary
threshold that selects no pixel or every pixel, a network input larger than the generated frames.

Presets (``psdif/presets/*.yaml``) are complete parameter files: ``embedded`` (generated mini-KITTI on a
CPU) and ``paper`` (real KITTI, the paper's settings); ``psdif preset NAME`` writes one to params.yaml.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and says what to do.

    Validation collects every problem it finds (``problems``, one message each) so that one run reports them
    all; the message is the first, followed by the others when there are several."""

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems) if problems else [message]
        if len(self.problems) > 1:
            message = f"{len(self.problems)} problems: " + "; ".join(
                f"({i}) {m}" for i, m in enumerate(self.problems, 1))
        super().__init__(message)

    def prefixed(self, prefix: str) -> "ParamsError":
        """The same problems, each prefixed (e.g. with the file name)."""
        problems = [f"{prefix}{m}" for m in self.problems]
        return ParamsError(problems[0], problems)


PRETRAIN_TOKEN = "pretrain"  # model.encoder_weights / model.pose_weights: the pretrain stage's output, these files:
PRETRAIN_FILES = {"model.encoder_weights": "data/pretrain/msfan.pt", "model.pose_weights": "data/pretrain/resnet18.pt"}


def required(ge=None, gt=None, le=None, lt=None, hint: str = ""):
    """A field params.yaml must give (it has no default), with the range of its number (or of every item of a list
    of numbers) checked on load; ``hint`` is appended to the message of a value out of range."""
    return field(metadata={"ge": ge, "gt": gt, "le": le, "lt": lt, "hint": hint})


# depth-decoder feature scales the metric loss can use: FF_0, FF_1, FF_2 at 1/2, 1/4, 1/8 (models/psdifm.py,
# models/baseline.py both return features {1, 2, 3})
METRIC_SCALES = (1, 2, 3)
NUM_CLASSES = 19  # the pseudo-labels are the 19 Cityscapes train ids (semantics/cityscapes.py)


SEED_MAX = 2**32 - 1  # numpy's legacy seeding takes 0 .. 2**32 - 1; torch and default_rng take those too


def _seed():
    """A random seed: an integer in [0, 2**32 - 1] (numpy, torch and Python all take it as it is)."""
    return required(ge=0, le=SEED_MAX, hint="(a seed: a non-negative integer, at most 4294967295)")


def _check_depth_range(section: str, lo: float, hi: float) -> None:
    if lo >= hi:
        raise ParamsError(f"{section}.min_depth={lo} must be < {section}.max_depth={hi}")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: Literal["synthetic", "kitti", "video"]  # synthetic: generated mini-KITTI; kitti: a real KITTI raw copy;
    # video: your own clips (the video section), ingested into the KITTI raw layout by the download stage
    raw_root: str                            # KITTI raw layout root (generated or downloaded here)
    splits_dir: str                          # where split lists are read (kitti) or written (synthetic)
    train_split: str                         # name of the training split (eigen_zhou on KITTI)
    test_split: str                          # name of the test split (eigen on KITTI)
    img_ext: Literal["png", "jpg"]
    height: int = required(ge=64)               # network input height (multiple of 32)
    width: int = required(ge=64)                # network input width (multiple of 32)
    num_workers: int | Literal["auto"] = required(ge=0)  # loader processes per training process; auto: from the cores
    intrinsics: Literal["calib", "kitti_normalised"]  # K from calib_cam_to_cam.txt P_rect, or Monodepth2's fixed K (design.md §4.2)
    test_protocol: Literal["auto", "eigen", "eigen_benchmark", "photometric"]  # test GT and protocol (design.md
    # §4.3): eigen = GT from the velodyne scans, Eigen crop; eigen_benchmark = KITTI's annotated depth PNGs, no crop;
    # photometric = no depth GT (your own videos): the masked photometric reprojection error of the test clips;
    # auto = eigen_benchmark when test_split is named eigen_benchmark, else eigen
    depth_annotated_root: Optional[str]  # annotated depth (data_depth_annotated.zip unpacked: <drive>/proj_depth/...
    # or train|val/<drive>/proj_depth/...); null = in place in raw_root (<date>/<drive>/proj_depth/...)

    def __post_init__(self):
        for name in ("height", "width"):
            if getattr(self, name) % 32:
                raise ParamsError(f"data.{name}={getattr(self, name)} must be a multiple of 32")

    @property
    def protocol(self) -> str:
        """The KITTI protocol of the test split: ``eigen`` or ``eigen_benchmark`` (``test_protocol`` resolved)."""
        if self.test_protocol != "auto":
            return self.test_protocol
        return "eigen_benchmark" if self.test_split == "eigen_benchmark" else "eigen"


@dataclass(frozen=True, kw_only=True)
class DownloadConfig:
    fetch: Literal["none", "missing"]  # none: never use the network; missing: fetch what the lists need and
    # is not on disk (KITTI drives and calibration, Make3D Test134 from eval.make3d_urls)
    url: str                   # KITTI raw archive base: <url>/<date>_calib.zip, <url>/<drive>/<drive>_sync.zip
    jpeg: bool                 # convert PNG to JPEG (quality below, 4:2:0) after extraction
    jpeg_quality: int = required(ge=1, le=100)
    retries: int = required(ge=0)
    depth_annotated: bool      # with fetch: missing, fetch depth_annotated_url into data.depth_annotated_root
    # when that folder is missing or empty (eigen_benchmark GT; about 14 GB)
    depth_annotated_url: str   # KITTI's data_depth_annotated.zip (depth completion page) or a mirror


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig:
    seed: int = _seed()
    image_width: int = required(ge=64)          # S_rect of the generated rig (KITTI: 1242)
    image_height: int = required(ge=32)         # (KITTI: 375)
    train_drives: int = required(ge=1)
    val_drives: int = required(ge=1)
    test_drives: int = required(ge=1)
    frames_per_drive: int = required(ge=8)
    test_frames_per_drive: int = required(ge=1)  # frames of each test drive listed in the test split
    supersample: int = required(ge=1, le=4)      # anti-aliasing: s x s samples per pixel
    make3d_images: int = required(ge=0)          # cross-domain Make3D-format test images (campus style)


@dataclass(frozen=True, kw_only=True)
class VideoConfig:
    """Your own videos (``data.source: video``; psdif/video.py, design.md §4.8): clips -> drives in data.raw_root."""
    clips: Optional[str]            # folder of clips: .mp4 .mov .mkv .avi files, or folders of numbered images
    camera: Optional[str]           # camera file of the clips (OpenCV YAML/XML, ROS camera_info, KITTI calib, psdif YAML)
    intrinsics: Optional[list[float]]  # or inline: [fx, fy, cx, cy, width, height] (pixels, at that size)
    hfov: Optional[float] = required(gt=1, lt=179)  # or a guessed horizontal field of view (degrees): every
    # table and log then says the intrinsics were guessed
    fps: Optional[float] = required(gt=0)        # sampling rate of the clips (KITTI: 10); null = every frame
    folder_fps: Optional[float] = required(gt=0)  # frame rate of image-folder clips; null = each image an instant
    width: Optional[int] = required(ge=32)      # written frame size; null (both) = the most common clip size
    height: Optional[int] = required(ge=32)
    test_clips: list[str]           # clip names held out for testing (file or folder names); [] = test_fraction
    val_fraction: float = required(ge=0, lt=1)   # share of the other clips validated on (whole clips)
    test_fraction: float = required(ge=0, lt=1)  # share of clips held out when test_clips is []
    split_seed: int = _seed()
    gt_depth: Optional[str]         # optional depth GT: <gt_depth>/<clip name without extension>/<k:010d>.png
    # (16-bit, metres x 256, KITTI's format) or .npy (metres), k = the decoded frame index in the clip
    cut_threshold: float = required(gt=0)        # mean |grey difference| (0-255) that starts a new drive
    duplicate_threshold: float = required(ge=0)  # below it a frame repeats the previous one and is dropped

    def __post_init__(self):
        given = [k for k in ("camera", "intrinsics", "hfov") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ParamsError(f"video: {' and '.join('video.' + k for k in given)} are both given; give one "
                              "(a camera file is best, intrinsics inline next, a field-of-view guess last)")
        if self.intrinsics is not None and len(self.intrinsics) != 6:
            raise ParamsError(f"video.intrinsics={self.intrinsics} must be [fx, fy, cx, cy, width, height]")
        if (self.width is None) != (self.height is None):
            raise ParamsError(f"video.width={self.width}, video.height={self.height}: give both or neither "
                              "(null = the most common clip size)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ParamsError(f"video.val_fraction + video.test_fraction = "
                              f"{self.val_fraction + self.test_fraction} leaves no clip to train on; keep it below 1")
        if self.cut_threshold <= self.duplicate_threshold:
            raise ParamsError(f"video.cut_threshold={self.cut_threshold} must be above "
                              f"video.duplicate_threshold={self.duplicate_threshold}")


@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    min_speed: float = required(ge=0)           # m/s; frames slower than this (OXTS) are static
    min_image_motion: float = required(ge=0)    # mean abs grey difference (0-255) when OXTS is missing
    drop_static: bool                       # drop static frames from the train / val lists (false: report only)
    val_fraction: float = required(ge=0, lt=1)  # share of kept train frames moved to val when the split has no val list


# pseudolabel keys that change how fast labels are made, not which: the labelling config (psdif.semantics.pseudolabel)
# and the pseudolabel stage's params in dvc.yaml leave them out, so changing them relabels nothing
LABELLING_INDEPENDENT = ("batch_size",)


@dataclass(frozen=True, kw_only=True)
class PseudolabelConfig:
    checkpoint: Optional[str]               # Cityscapes DeepLabv3+/ResNet-101 .pth; null = `labeller` below
    labeller: Literal["teacher", "oracle"]  # checkpoint null: train the in-pipeline teacher, or copy the
    # generator's exact semantic ground truth (oracle; synthetic data only: every class boundary is there
    # by construction, e.g. for tests that need non-empty B_t whatever the seed)
    batch_size: int = required(ge=1)
    precision: Literal["fp32", "bf16", "fp16"]  # inference autocast on CUDA (ignored on the CPU)
    teacher_encoder: str  # smp encoder name of the teacher (embedded default)
    teacher_decoder_channels: int = required(ge=8)  # ASPP / decoder width of the teacher (DeepLabv3+: 256)
    teacher_steps: int = required(ge=1)
    teacher_batch_size: int = required(ge=1)
    teacher_lr: float = required(gt=0, le=1)
    teacher_height: int = required(ge=32)     # teacher training crop (multiples of 16)
    teacher_width: int = required(ge=32)
    teacher_weight_decay: float = required(ge=0)  # AdamW weight decay of the teacher
    teacher_scale: list[float]  # random rescale range [min, max] of teacher training crops
    teacher_seed: int = _seed()
    teacher_class_weighting: Literal["none", "sqrt_inverse", "median_frequency"]  # CE class weights from the
    # training labels' pixel frequencies f_c (segmentation.class_weights): 1, 1/sqrt(f_c), median(f)/f_c

    def __post_init__(self):
        for name in ("teacher_height", "teacher_width"):
            if getattr(self, name) % 16:
                raise ParamsError(f"pseudolabel.{name}={getattr(self, name)} must be a multiple of 16 "
                                  "(the teacher's output stride)")
        sc = self.teacher_scale
        if len(sc) != 2 or not 0 < sc[0] <= sc[1]:
            raise ParamsError(f"pseudolabel.teacher_scale={sc} must be [min, max] with 0 < min <= max "
                              "(e.g. [0.75, 1.25]; [1.0, 1.0] = no rescaling)")


@dataclass(frozen=True, kw_only=True)
class BoundaryConfig:
    z: int = required(ge=1)                     # neighbourhood side Z (odd)
    t: int = required(ge=0)                     # threshold T on |count(P+) - count(P-)|
    figure_t: list[int] = required(ge=0)  # T values drawn in the Figure-4 panel
    figure_z: list[int] = required(ge=1)  # Z values drawn in the Figure-4 panel

    def __post_init__(self):
        if self.z % 2 == 0:
            raise ParamsError(f"boundary.z={self.z} must be odd (a centred Z x Z neighbourhood)")
        for i, z in enumerate(self.figure_z):
            if z % 2 == 0:
                raise ParamsError(f"boundary.figure_z[{i}]={z} must be odd (a centred Z x Z neighbourhood)")
        # |count(P+) - count(P-)| = |2 |P+| - Z^2| is odd (Z odd) and at most Z^2 (paper §3.4)
        if self.t < 1:
            raise ParamsError(f"boundary.t={self.t} selects no pixel: |count(P+) - count(P-)| is odd for an "
                              "odd Z, so it is never <= 0; use t >= 1 (the paper: 10)")
        if self.t >= self.z * self.z:
            raise ParamsError(f"boundary.t={self.t} makes every pixel a boundary pixel "
                              f"(|count(P+) - count(P-)| <= Z^2 = {self.z * self.z}); use t < {self.z * self.z}")


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    enabled: bool  # train from frames, labels and B_t resized once (data/prepared); false: decode PNGs each epoch


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    msfan_size: Literal["w18", "w18_small", "tiny"]  # HRNet configuration of MSFAN (w18 = the paper)
    decoder_channels: list[int]              # decoder widths at output scales 0..4 (1/2^s): F_0, levels 0..3
    baseline_width: float = required(gt=0, le=1)  # width multiplier of the ResNet-18 baseline (1.0 = paper)
    pose_width: float = required(gt=0, le=1)      # width multiplier of the pose ResNet-18 (1.0 = paper)
    encoder_weights: Optional[str]    # null | imagenet | pretrain | HRNet file (timm, HRNet-Cls/-Seg, mmseg): models/weights.py
    pose_weights: Optional[str]       # null | imagenet | pretrain | torchvision ResNet-18 file (pose + baseline encoders)
    num_classes: int = required(ge=2)
    min_depth: float = required(gt=0)
    max_depth: float = required(gt=0)

    def __post_init__(self):
        if len(self.decoder_channels) != 5 or min(self.decoder_channels) < 1:
            raise ParamsError(f"model.decoder_channels={self.decoder_channels} must be 5 positive widths "
                              "(output scales 0..4: F_0 at full size, then PSDIFM levels 0..3)")
        if self.num_classes != NUM_CLASSES:
            raise ParamsError(f"model.num_classes={self.num_classes} must be {NUM_CLASSES}: the pseudo-labels "
                              "are the 19 Cityscapes train ids (a smaller head cannot take them as targets)")
        _check_depth_range("model", self.min_depth, self.max_depth)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """The pretrain stage (psdif/pretrain.py): used where model.encoder_weights / pose_weights is ``pretrain``."""
    steps: int = required(ge=1)                 # Adam steps (each encoder sees the same batches)
    batch_size: int = required(ge=1)
    lr: float = required(gt=0, le=1)
    head_channels: int = required(ge=1)         # width of the discarded segmentation head
    seed: int = _seed()
    checkpoint_every: int = required(ge=1)      # steps between last.pt writes (resume)


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    alpha: float = required(ge=0, le=1)         # SSIM weight of the photometric error
    smoothness: float = required(ge=0)          # lambda, edge-aware smoothness
    mu1: float = required(ge=0)                 # Eq. 20 weight of L_base
    mu2: float = required(ge=0)                 # cross-entropy weight
    mu3: float = required(ge=0)                 # metric (boundary) loss weight
    gamma1: float = required(ge=0)              # weight of consistent boundary pixels B_gt (Eq. 13)
    gamma2: float = required(ge=0)              # weight of inconsistent boundary pixels B_ct (Eq. 13)
    margin: float = required(ge=0)              # triplet margin m
    metric_scales: list[int]  # depth-decoder scales of the metric loss
    metric_distance: Literal["l2", "squared"]
    automask: bool

    def __post_init__(self):
        scales = self.metric_scales
        if not scales:
            raise ParamsError(f"loss.metric_scales={scales} must name at least one scale of "
                              f"{list(METRIC_SCALES)} (set loss.mu3: 0 to switch the metric loss off)")
        for s in scales:
            if s not in METRIC_SCALES:
                raise ParamsError(f"loss.metric_scales={scales}: scale {s} is not one of the depth-decoder "
                                  f"feature scales {list(METRIC_SCALES)} (FF_0..FF_2 at 1/2, 1/4, 1/8)")
            if scales.count(s) > 1:
                raise ParamsError(f"loss.metric_scales={scales} lists scale {s} twice")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    seeds: list[int] = _seed()       # one run per (variant, seed): stage train_<variant>@<seed>; from two seeds
                                     # on, Tables 1-3 show mean ± std and Table 3 paired tests
    epochs: int = required(ge=1)
    max_steps: Optional[int] = required(ge=1, hint="(or null = all epochs)")  # stop after this many steps
    batch_size: int = required(ge=1)
    lr: float = required(gt=0, le=1)
    lr_step_epochs: int = required(ge=1)        # lr x lr_gamma after this many epochs
    lr_gamma: float = required(gt=0, le=1)
    checkpoint_every: int = required(ge=1)      # steps between checkpoints (plus one at each epoch end)
    log_every: int = required(ge=1)
    amp: bool                        # bf16 autocast on CUDA (ignored on CPU); false = fp32, the paper's precision
    compile: bool                   # torch.compile the training step

    def __post_init__(self):
        if not self.seeds:
            raise ParamsError("train.seeds is empty; give at least one seed, e.g. [0]")
        if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"train.seeds={self.seeds} must be distinct non-negative integers, e.g. [0, 1, 2]")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    min_depth: float = required(gt=0)
    max_depth: float = required(gt=0)
    post_process: bool              # Monodepth v1 flip post-processing
    batch_size: int = required(ge=1)
    make3d_root: Optional[str]       # Test134 folder (img-*.jpg, depth_sph_corr-*.mat); null = none
    make3d_max_depth: float = required(gt=0)
    make3d_urls: list[str]     # Test134 archives fetched into make3d_root when it holds no pairs; [] = none
    make3d_sha256: list[str]   # pinned SHA-256 per URL, same order ("" = unpinned: the digest is printed)
    figure_frames: list[int] = required(ge=0)  # test-split indices drawn in Figure 6

    def __post_init__(self):
        _check_depth_range("eval", self.min_depth, self.max_depth)
        for i, digest in enumerate(self.make3d_sha256):
            if digest and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ParamsError(f"eval.make3d_sha256[{i}]={digest!r} must be 64 hexadecimal digits "
                                  "(a SHA-256) or \"\" (unpinned)")
        if self.make3d_sha256 and len(self.make3d_sha256) != len(self.make3d_urls):
            raise ParamsError(f"eval.make3d_sha256 has {len(self.make3d_sha256)} entries for "
                              f"{len(self.make3d_urls)} eval.make3d_urls; give one digest per URL (or [])")


@dataclass(frozen=True, kw_only=True)
class Params:
    data: DataConfig
    download: DownloadConfig
    synthetic: SyntheticConfig
    video: VideoConfig
    filter: FilterConfig
    pseudolabel: PseudolabelConfig
    boundary: BoundaryConfig
    prepare: PrepareConfig
    model: ModelConfig
    pretrain: PretrainConfig
    loss: LossConfig
    train: TrainConfig
    eval: EvalConfig

    def __post_init__(self):
        if self.pseudolabel.labeller == "oracle":
            if self.pseudolabel.checkpoint:
                raise ParamsError(f"pseudolabel.labeller=oracle with pseudolabel.checkpoint="
                                  f"{self.pseudolabel.checkpoint!r}: choose one (checkpoint: null for the oracle, "
                                  "or labeller: teacher to label with the checkpoint)")
            if self.data.source != "synthetic":
                raise ParamsError("pseudolabel.labeller=oracle needs data.source: synthetic (only the generator "
                                  "has semantic ground truth); use labeller: teacher with a checkpoint on KITTI")
        if self.data.source == "video":
            self._check_video()
        elif self.data.test_protocol == "photometric":
            raise ParamsError(f"data.test_protocol: photometric is for data.source: video without depth GT; "
                              f"{self.data.source} data has depth GT (use auto)")
        if self.download.depth_annotated and not self.data.depth_annotated_root:
            raise ParamsError("download.depth_annotated: true needs data.depth_annotated_root: the folder "
                              "data_depth_annotated.zip is extracted into (it is never written into the raw copy)")
        # `pretrain` names the pretrain stage's files (psdif/pretrain.py): generated ground truth, one ResNet-18
        used = [k for k in ("encoder_weights", "pose_weights") if getattr(self.model, k) == PRETRAIN_TOKEN]
        if used and self.data.source != "synthetic":
            raise ParamsError(f"{' and '.join('model.' + k for k in used)}: pretrain needs the generated data's "
                              f"semantic ground truth (data.source synthetic, not {self.data.source}); on real "
                              "KITTI use the published weights (psdif/presets/paper.yaml, docs/paper_setting.md)")
        if "pose_weights" in used and self.model.baseline_width != self.model.pose_width:
            raise ParamsError(f"model.pose_weights: pretrain is one ResNet-18 file for the baseline and the pose "
                              f"net, so model.baseline_width ({self.model.baseline_width}) must equal "
                              f"model.pose_width ({self.model.pose_width})")
        if self.data.source != "synthetic":
            return
        syn = self.synthetic
        for net, gen in (("height", "image_height"), ("width", "image_width")):
            if getattr(self.data, net) > getattr(syn, gen):
                raise ParamsError(f"data.{net}={getattr(self.data, net)} is larger than the generated frames' "
                                  f"synthetic.{gen}={getattr(syn, gen)}: the network would see upsampled "
                                  f"images; lower data.{net} or raise synthetic.{gen}")
        frames = syn.train_drives * syn.frames_per_drive  # an upper bound: static frames are filtered out
        if self.train.batch_size > frames:
            raise ParamsError(f"train.batch_size={self.train.batch_size} is more than the {frames} generated "
                              "training frames (synthetic.train_drives x frames_per_drive): no full batch; "
                              "lower train.batch_size or generate more frames")

    def _check_video(self):
        v, problems = self.video, []
        if v.clips is None:
            problems.append("data.source: video needs video.clips, the folder of your clips "
                            "(`psdif preset video --videos DIR --camera FILE` writes it)")
        if v.camera is None and v.intrinsics is None and v.hfov is None:
            problems.append("data.source: video needs the camera: video.camera (a camera file; `psdif calibrate` "
                            "makes one), video.intrinsics [fx, fy, cx, cy, width, height], or a guessed video.hfov")
        want = "eigen_benchmark" if v.gt_depth else "photometric"
        if self.data.protocol != want:
            why = ("video.gt_depth is given: its depth is the test GT" if v.gt_depth
                   else "video.gt_depth is null: no depth GT, the score is photometric")
            problems.append(f"data.test_protocol={self.data.test_protocol}: {why}; set data.test_protocol: {want}")
        if v.gt_depth and self.data.depth_annotated_root:
            problems.append("data.depth_annotated_root must be null with data.source: video (the ingest writes "
                            "the depth of video.gt_depth in place, under data.raw_root)")
        if self.data.intrinsics != "calib":
            problems.append("data.source: video needs data.intrinsics: calib (the ingest writes each drive's "
                            "calibration; KITTI's fixed intrinsics describe another camera)")
        if problems:
            raise ParamsError(problems[0], problems)


# ----------------------------------------------------------------------------------------------- validation

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if errors else f"{key}: null is not allowed")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key}={value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            example = f", e.g. [{value!r}]" if isinstance(value, (int, float, str)) else ""
            raise ParamsError(f"{key}={value!r} must be a list of {_type_name(args[0])}{example}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e-3 (no dot) as a string: accept numeric strings
            if isinstance(value, str):
                try:
                    number = float(value)
                except ValueError:
                    pass
                else:
                    if not math.isfinite(number):  # "1e400", "nan", "inf"
                        raise ParamsError(f"{key}={value!r} must be a finite number")
                    return number
            raise ParamsError(f"{key}={value!r} must be a number")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ParamsError(f"{key}={value!r} must be a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}={value!r} must be a string")
        return value
    raise TypeError(f"unsupported annotation {tp} for {key}")


def _check_range(value, meta, key):
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_range(v, meta, f"{key}[{i}]")
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for bound, ok, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                             ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            hint = f" {meta['hint']}" if meta.get("hint") else ""
            raise ParamsError(f"{key}={value} must be {words} {b}{hint}")


def _build(cls, raw: dict, prefix: str, all_keys: list[str], errors: list[str]):
    """``cls`` from ``raw``, or None when something is wrong; every problem found is appended to ``errors``."""
    if not isinstance(raw, dict):
        errors.append(f"{prefix.rstrip('.') or 'params'} must be a mapping, got {type(raw).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    before = len(errors)
    for key in raw:
        if key not in fields:
            full = f"{prefix}{key}"
            near = difflib.get_close_matches(full, all_keys, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else f"; valid keys: {', '.join(fields)}"
            errors.append(f"unknown parameter {full}{hint}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if name not in raw:
            errors.append(f"missing parameter {key} ({_type_name(tp)}); see psdif/presets/embedded.yaml")
            continue
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, raw[name], f"{key}.", all_keys, errors)
            continue
        try:
            values[name] = _coerce(raw[name], tp, key)
            if isinstance(values[name], str) and not values[name].strip():
                optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
                raise ParamsError(f"{key} is empty; give a value{' or null' if optional else ''}")
            _check_range(values[name], f.metadata, key)
        except ParamsError as exc:
            errors.extend(exc.problems)
    if len(errors) > before:  # the checks across fields need valid fields
        return None
    try:
        return cls(**values)
    except ParamsError as exc:
        errors.extend(exc.problems)
        return None


def all_param_keys(cls=Params, prefix: str = "") -> list[str]:
    """Every valid dotted key, e.g. ``loss.mu3``."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_param_keys(hints[f.name], f"{key}."))
    return keys


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`."""
    errors: list[str] = []
    params = _build(Params, raw, "", all_param_keys(), errors)
    if errors:
        raise ParamsError(errors[0], errors)
    return params


def parse_sections(raw: dict, names: tuple[str, ...]) -> types.SimpleNamespace | None:
    """Only the sections ``names`` of a params mapping, each validated on its own (None if one is invalid):
    what can still be checked when another section of the file is wrong."""
    hints, out = typing.get_type_hints(Params), {}
    for name in names:
        errors: list[str] = []
        section = raw.get(name) if isinstance(raw, dict) else None
        out[name] = _build(hints[name], section, f"{name}.", all_param_keys(), errors)
        if errors:
            return None
    return types.SimpleNamespace(**out)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file (run `psdif preset embedded` to write one)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_params(raw or {})
    except ParamsError as exc:
        raise exc.prefixed(f"{path}: ") from None


PRESETS_DIR = Path(__file__).parent / "presets"


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ParamsError(f"unknown preset {name!r}; available: {', '.join(names)}")
    return path


def default_params() -> Params:
    """The embedded preset, validated (tests and tools use it as the reference configuration)."""
    return load_params(preset_path("embedded"))


def to_dict(params: Any) -> dict:
    return dataclasses.asdict(params)
