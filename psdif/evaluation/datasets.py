"""Names of the data a result was measured on, written into metrics/eval/*.json by the evaluate stages and
shown by the tables (one home, so that the evaluate stages do not depend on the table layout)."""

SYNTHETIC_KITTI = "generated mini-KITTI (embedded default)"
REAL_KITTI = "KITTI raw"
SYNTHETIC_MAKE3D = "generated Make3D-format set (embedded default)"
REAL_MAKE3D = "Make3D Test134"


def kitti_label(data_source: str) -> str:
    """The label of this run's KITTI-layout data from ``data.source``."""
    return SYNTHETIC_KITTI if data_source == "synthetic" else REAL_KITTI
