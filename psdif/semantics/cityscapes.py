"""Cityscapes conventions shared by the pseudo-labeller, the losses, the dataset and the figures.

The 19 train ids (0 road ... 18 bicycle) label the semantic head's classes; 255 marks void / unknown pixels
(ignored by the cross-entropy and by the semantic-inconsistency test of Algorithm 1).
"""

from __future__ import annotations

import numpy as np

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# The usual Cityscapes colours of the 19 train ids (for figures only).
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], np.uint8)
VOID_LABEL = 255  # void / unknown pseudo-label: ignored by the cross-entropy (psdif.losses)
