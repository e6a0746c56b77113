"""Encoder pretraining of the embedded default: the stand-in of the paper's Cityscapes / ImageNet initialisation.

Paper §4.2 starts MSFAN's HRNet layers from an HRNet trained on Cityscapes segmentation, and the
Monodepth2 pose net and the HR-Depth baseline start from an ImageNet ResNet-18 (docs/paper_setting.md).
No public file fits the embedded default's reduced networks (``model.msfan_size: tiny``, ResNet-18 at width
``model.baseline_width`` = ``model.pose_width``), so the ``pretrain`` stage makes them the same way: it
trains each encoder with a light segmentation head (discarded) on the generator's exact semantic ground
truth of the training drives (``<raw_root>/synthetic_gt/<drive>/semantic_0{2,3}/``), a labelled set of the
same street domain, as Cityscapes is for KITTI. Its files are ordinary weight files in the layouts the
loaders read (``psdif.models.weights``): the HRNet backbone under timm's names for MSFAN, a torchvision-named
ResNet-18 at the width multiplier for the baseline and the pose net (whose conv1 takes the RGB kernel spread
over its two frames). ``model.encoder_weights: pretrain`` / ``model.pose_weights: pretrain`` name them.

- Head (:class:`SegmentationHead`, as HRNetV2's segmentation head): every feature map of the encoder at
  1/4 .. 1/32 (MSFAN: the four stage-4 branches; ResNet-18: layer1..layer4) upsampled bilinearly to 1/4,
  concatenated, 1x1 conv + BN + ReLU to ``pretrain.head_channels``, 1x1 conv to 19 classes, x4 bilinear.
- Data: every frame on disk of both cameras of the drives of the filtered train list, resized to the
  network size (``data.height`` x ``data.width``, as training sees them; labels nearest), held in memory.
- Steps: ``pretrain.steps`` Adam steps (``pretrain.lr``, no decay) of cross-entropy; step i draws its batch
  (indices and flips) from ``default_rng([pretrain.seed, i])``, so a resumed run draws the same batches as
  an uninterrupted one. ``last.pt`` (every ``pretrain.checkpoint_every`` steps) holds the step, networks
  and optimisers; it is refused when written under another configuration.
- Report: mIoU and pixel accuracy on the validation drive(s) (never trained on) for each encoder.

When no weights param names ``pretrain`` (the paper preset), the stage writes placeholder files (their
declared DVC outputs), which the loader refuses with a message saying so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from psdif.data import kitti
from psdif.data.images import read_image, resize_image, resize_nearest
from psdif.io import params_hash, save_torch
from psdif.models.layers import ImageNormalize, ResNet18Encoder
from psdif.models.msfan import HRNET_CFGS, MSFAN
from psdif.models.sources import ENCODER_KEY, POSE_KEY, PRETRAIN, PRETRAIN_FILES
from psdif.semantics.cityscapes import VOID_LABEL
from psdif.semantics.labels import confusion_matrix, miou_from_confusion, read_label_png

NUM_CLASSES = 19
ENCODERS = {ENCODER_KEY: "msfan", POSE_KEY: "resnet18"}   # weights param -> encoder the stage pretrains


# ------------------------------------------------------------------------------------------ params

def wanted(model_cfg) -> dict[str, bool]:
    """``{weights param: whether it names the pretrain stage's output}``."""
    return {ENCODER_KEY: model_cfg.encoder_weights == PRETRAIN, POSE_KEY: model_cfg.pose_weights == PRETRAIN}


# ------------------------------------------------------------------------------------------ networks

class SegmentationHead(nn.Module):
    """HRNetV2-style head: features [B, C_i, H/2^(i+2), W/2^(i+2)] (i = 0..3) -> logits [B, classes, H, W]."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(sum(in_channels), channels, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True))
        self.classify = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        top = feats[0].shape[-2:]
        x = torch.cat([feats[0]] + [F.interpolate(f, size=top, mode="bilinear", align_corners=False)
                                    for f in feats[1:]], 1)
        return F.interpolate(self.classify(self.fuse(x)), size=size, mode="bilinear", align_corners=False)


class MSFANSegmenter(nn.Module):
    """MSFAN's HRNet backbone (``msfan_size``) + head on its stage-4 branches. ``encoder_state()`` = the file.

    The MSFAN module is built whole so its ``stage_outputs`` runs the backbone; its coordinate attention is
    not used here (and gets no gradient): the loader leaves it at its random init, as paper §4.2 does."""

    def __init__(self, msfan_size: str, head_channels: int):
        super().__init__()
        self.normalise = ImageNormalize()
        self.msfan = MSFAN(msfan_size)
        stage4 = HRNET_CFGS[msfan_size]["stage4"]
        expansion = 4 if stage4["block_type"] == "BOTTLENECK" else 1
        self.head = SegmentationHead([c * expansion for c in stage4["num_channels"]], head_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stage4 = self.msfan.stage_outputs(self.normalise(images))[4]
        return self.head(stage4, images.shape[-2:])

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.msfan.backbone.state_dict().items()}


class ResNetSegmenter(nn.Module):
    """ResNet-18 trunk at ``width`` (torchvision names) + head on layer1..layer4."""

    def __init__(self, width: float, head_channels: int):
        super().__init__()
        self.normalise = ImageNormalize()
        self.encoder = ResNet18Encoder(3, width)
        self.head = SegmentationHead(self.encoder.channels[1:], head_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.normalise(images))[1:], images.shape[-2:])

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}


def build_segmenter(key: str, model_cfg, head_channels: int) -> nn.Module:
    if key == ENCODER_KEY:
        return MSFANSegmenter(model_cfg.msfan_size, head_channels)
    return ResNetSegmenter(model_cfg.pose_width, head_channels)


# ------------------------------------------------------------------------------------------ data

def semantic_gt_path(root: str | Path, ref: kitti.FrameRef) -> Path:
    """The generator's semantic ground truth of a frame (uint8 train ids; psdif/data/synthetic/__init__.py)."""
    return Path(root) / "synthetic_gt" / ref.folder.split("/")[-1] / f"semantic_0{ref.cam}" / f"{ref.frame:010d}.png"


def drive_frames(root: str | Path, folders) -> list[kitti.FrameRef]:
    """Every frame on disk of both cameras of each drive, sorted."""
    return [kitti.FrameRef(f, i, side) for f in sorted(set(folders)) for side in ("l", "r")
            for i in kitti.list_frames(root, f, kitti.SIDE_TO_CAM[side])]


@dataclass
class Samples:
    images: torch.Tensor   # float [N, 3, H, W] in [0, 1]
    labels: torch.Tensor   # int64 [N, H, W], VOID_LABEL ignored


def load_samples(root: str | Path, frames: Sequence[kitti.FrameRef], img_ext: str, height: int, width: int,
                 progress: bool = False) -> Samples:
    """Images and ground-truth labels of ``frames`` at the network size (area-resized / nearest)."""
    from psdif.process import progress_bar

    if not frames:
        raise ValueError("no frames to pretrain on: the filtered train list names no drive on disk")
    images, labels = [], []
    for ref in progress_bar(frames, desc="pretrain data", disable=not progress):
        gt = semantic_gt_path(root, ref)
        if not gt.is_file():
            raise FileNotFoundError(f"{gt}: semantic ground truth of frame {ref.line()} missing; pretrain needs "
                                    "the generated data (data.source synthetic): rerun the download stage")
        images.append(resize_image(read_image(kitti.image_path(root, ref, img_ext)), height, width))
        labels.append(resize_nearest(read_label_png(gt), height, width))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return Samples(x, torch.from_numpy(np.stack(labels).astype(np.int64)))


def draw_batch(samples: Samples, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: indices and flips from ``default_rng([seed, step])`` (resume-exact)."""
    rng = np.random.default_rng([seed, step])
    idx = torch.from_numpy(rng.integers(0, len(samples.images), batch_size))
    flip = torch.from_numpy(rng.random(batch_size) < 0.5)
    x, y = samples.images[idx], samples.labels[idx]
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    return x, y


# ------------------------------------------------------------------------------------------ training

@dataclass
class PretrainResult:
    states: dict[str, dict[str, torch.Tensor]]   # weights param -> encoder state dict
    losses: dict[str, list[float]]               # weights param -> CE at each log point
    cpu_seconds: float                           # process CPU time of the steps run here
    steps: int
    nets: dict[str, nn.Module]                   # weights param -> encoder + head (for the report)


def run_key(model_cfg, cfg, keys: Sequence[str], data_digest: str) -> dict:
    """Everything a pretraining run depends on (its ``last.pt`` is refused under another one)."""
    return {"keys": list(keys), "msfan_size": model_cfg.msfan_size, "width": model_cfg.pose_width,
            "pretrain": {k: getattr(cfg, k) for k in ("steps", "batch_size", "lr", "head_channels", "seed")},
            "data": data_digest}


def pretrain(keys: Sequence[str], model_cfg, cfg, samples: Samples, run_dir: Optional[Path] = None,
             data_digest: str = "", progress: bool = False, log_every: int = 25) -> PretrainResult:
    """Pretrain the encoders named by ``keys`` (``model.encoder_weights`` / ``model.pose_weights``) for
    ``cfg.steps`` steps on the same batches; resumes from ``run_dir/last.pt`` when it matches."""
    from psdif.process import progress_bar, set_resume_note

    torch.manual_seed(cfg.seed)
    nets = {k: build_segmenter(k, model_cfg, cfg.head_channels).train() for k in keys}
    opts = {k: torch.optim.Adam(n.parameters(), lr=cfg.lr) for k, n in nets.items()}
    losses: dict[str, list[float]] = {k: [] for k in keys}
    key_hash = params_hash(run_key(model_cfg, cfg, keys, data_digest))
    ckpt = run_dir / "last.pt" if run_dir is not None else None
    step = 0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("key") != key_hash:
            raise RuntimeError(f"{ckpt}: written by another pretraining configuration; delete it to start over")
        for k in keys:
            nets[k].load_state_dict(state["nets"][k])
            opts[k].load_state_dict(state["opts"][k])
        step, losses = state["step"], state["losses"]
        print(f"pretrain: resumed at step {step} from {ckpt}", flush=True)
    start = time.process_time()
    bar = progress_bar(total=cfg.steps, initial=step, desc="pretrain", disable=not progress)
    saved = [step if step else None]  # the step of the checkpoint on disk, for Ctrl-C's line
    set_resume_note(lambda: f"the checkpoint {ckpt} at step {saved[0]} of {cfg.steps} is kept; rerun `dvc repro` "
                    "to resume from it" if saved[0] else "no pretraining checkpoint was written yet; rerun `dvc repro` "
                    "to start again")
    while step < cfg.steps:
        x, y = draw_batch(samples, cfg.seed, step, cfg.batch_size)
        for k in keys:
            loss = F.cross_entropy(nets[k](x), y, ignore_index=VOID_LABEL)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"pretrain {ENCODERS[k]}: non-finite loss at step {step + 1}; "
                                             "lower pretrain.lr")
                losses[k].append(round(float(loss.detach()), 5))
        step += 1
        bar.update(1)
        if ckpt is not None and (step % cfg.checkpoint_every == 0) and step < cfg.steps:
            save_torch(ckpt, {"key": key_hash, "step": step, "losses": losses,
                              "nets": {k: n.state_dict() for k, n in nets.items()},
                              "opts": {k: o.state_dict() for k, o in opts.items()}})
            saved[0] = step
    bar.close()
    set_resume_note(None)
    return PretrainResult({k: nets[k].encoder_state() for k in keys}, losses, time.process_time() - start, step,
                          nets)


@torch.no_grad()
def segmentation_scores(net: nn.Module, samples: Samples, batch_size: int = 32) -> dict:
    """mIoU (classes present in the ground truth) and pixel accuracy of ``net`` on ``samples``."""
    was = net.training
    net.eval()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for i in range(0, len(samples.images), batch_size):
        pred = net(samples.images[i:i + batch_size]).argmax(1)
        conf += confusion_matrix(samples.labels[i:i + batch_size].numpy(), pred.numpy(), NUM_CLASSES)
    net.train(was)
    scores = miou_from_confusion(conf)
    return {"miou": round(scores["miou"], 4), "pixel_acc": round(scores["pixel_acc"], 4),
            "n_images": len(samples.images)}


# ------------------------------------------------------------------------------------------ files

def save_encoder(path: str | Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    """The output file: ``{"meta": ..., "state_dict": encoder tensors}`` (read by psdif.models.weights)."""
    save_torch(path, {"meta": meta, "state_dict": state})


def write_placeholder(path: str | Path, key: str, value) -> None:
    """The declared output when ``key`` does not name ``pretrain``: no tensors, and why (the loader says so)."""
    save_torch(path, {"meta": {"placeholder": True,
                               "reason": f"{key} is {value!r}, not {PRETRAIN!r}, so nothing was pretrained"},
                      "state_dict": {}})


def output_path(key: str) -> Path:
    return Path(PRETRAIN_FILES[key])
