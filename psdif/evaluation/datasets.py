"""Names of the data a result was measured on, written into metrics/eval/*.json by the evaluate stages and
shown by the tables (one home, so that the evaluate stages do not depend on the table layout)."""

SYNTHETIC_KITTI = "generated mini-KITTI (embedded default)"
REAL_KITTI = "KITTI raw"
SYNTHETIC_MAKE3D = "generated Make3D-format set (embedded default)"
REAL_MAKE3D = "Make3D Test134"


VIDEO = "your videos"


def kitti_label(data_source: str, hfov: float | None = None) -> str:
    """The label of this run's KITTI-layout data from ``data.source`` (and ``video.hfov``: guessed intrinsics)."""
    if data_source == "video":
        return VIDEO + (f" (intrinsics guessed from a {hfov:g} degree field of view)" if hfov is not None else "")
    return SYNTHETIC_KITTI if data_source == "synthetic" else REAL_KITTI
