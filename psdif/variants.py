"""The Table 3 ablation variants and the switches each one turns on (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass


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


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
