"""The Table 3 ablation variants and the switches each one turns on (design.md §3)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from psdif.config import TrainConfig


@dataclass(frozen=True)
class Variant:
    name: str
    msfan: bool        # MSFAN encoder (off: ResNet-18 + HR-Depth-style nested decoder)
    seg: bool          # semantic decoder and cross-entropy loss
    psdifm: bool       # SAM exchange between the two decoders (Eqs. 3-7)
    metric_loss: bool  # boundary alignment loss (Eq. 13)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("baseline", msfan=False, seg=False, psdifm=False, metric_loss=False),
        Variant("msfan", msfan=True, seg=False, psdifm=False, metric_loss=False),
        Variant("msfan_seg", msfan=True, seg=True, psdifm=False, metric_loss=False),
        Variant("msfan_seg_psdifm", msfan=True, seg=True, psdifm=True, metric_loss=False),
        Variant("full", msfan=True, seg=True, psdifm=True, metric_loss=True),
    )
}


def needs_labels(variant: Variant) -> bool:
    """Whether the variant learns from pseudo-labels (its semantic decoder, or the boundary sets B_t)."""
    return variant.seg or variant.metric_loss


# your own videos without pseudolabel.checkpoint: the pseudolabel stage writes the void label and says so in its
# manifest; the train stages of the variants that need labels write "not run" outputs (stages/train.py)
NO_LABELLER = "none"
NO_LABELLER_WHY = ("no labeller: your videos need pseudolabel.checkpoint (the Cityscapes DeepLabv3+/ResNet-101 "
                   "checkpoint, or a psdif teacher.pt; `psdif preset video ... --labels FILE`) for the rows with "
                   "semantics (msfan_seg, msfan_seg_psdifm, full)")


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None


# params.yaml keys that the training of each variant reads (dvc.yaml lists exactly these for its train
# stages, so `dvc exp run -S loss.mu3=...` re-trains only the variants that use mu3; the checkpoint's
# params hash covers the same keys). Every train.* key but train.seeds: each train_<variant>@<seed> stage
# reads its own seed (from its command line), so adding a seed leaves the runs of the others untouched.
# Nor the cadence keys: how often a run logs and writes last.pt changes no weight (last.pt holds the RNG
# state, so a resumed run continues bit for bit), so changing them retrains nothing; the loss log of a
# finished run keeps the cadence it was made with.
# Tested against dvc.yaml in tests/test_pipeline.py.
CADENCE = ("log_every", "checkpoint_every")
_TRAIN = [f"train.{f.name}" for f in fields(TrainConfig) if f.name not in ("seeds", *CADENCE)]
_COMMON = ["data.height", "data.width", "data.img_ext", "data.intrinsics", "model.min_depth", "model.max_depth",
           "model.pose_width", "model.pose_weights", "model.decoder_channels", *_TRAIN, "loss.alpha",
           "loss.smoothness", "loss.mu1", "loss.automask"]
_MSFAN = ["model.msfan_size", "model.encoder_weights"]
_SEG = ["model.num_classes", "loss.mu2"]
_METRIC = ["loss.mu3", "loss.gamma1", "loss.gamma2", "loss.margin", "loss.metric_scales",
           "loss.metric_distance", "boundary.z"]


def params_read_by(variant: Variant) -> list[str]:
    keys = list(_COMMON)
    keys += _MSFAN if variant.msfan else ["model.baseline_width"]
    if variant.seg:
        keys += _SEG
    if variant.metric_loss:
        keys += _METRIC
    return keys


def select_params(raw: dict, keys: list[str]) -> dict:
    """The sub-mapping of a raw params dict named by dotted ``keys`` (for hashing)."""
    out = {}
    for key in keys:
        node = raw
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


# the loss terms training logs (psdif.losses; each variant logs the terms it computes: ce with seg, metric with
# metric_loss) and their axis titles, drawn per variant by the summary stage and declared as plots in dvc.yaml
CURVE_TERMS = {
    "total": "total loss (Eq. 20)",
    "photometric": "photometric reprojection loss",
    "smoothness": "edge-aware smoothness loss",
    "ce": "semantic cross-entropy loss",
    "metric": "boundary metric loss (Eq. 13)",
}
