"""Compatibility name: the public names of the former ``psdif.segmentation`` module, now in ``psdif.semantics``
(``cityscapes`` constants, ``deeplab`` loader, ``teacher``, ``labels``). Code written against the flat layout,
and the checks that call ``psdif.segmentation.load_cityscapes_deeplab``, keep working."""

from psdif.semantics.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, VOID_LABEL  # noqa: F401
from psdif.semantics.deeplab import (CheckpointError, CityscapesDeepLabV3Plus, describe_model,  # noqa: F401
                                     load_cityscapes_deeplab)
from psdif.semantics.labels import (confusion_matrix, evaluate_miou, label_frames, label_path,  # noqa: F401
                                    miou_from_confusion, normalize_images, predict_labels, predict_logits,
                                    read_label_png, write_label_png)
from psdif.semantics.teacher import (CLASS_WEIGHTINGS, build_teacher, class_weights, load_teacher,  # noqa: F401
                                     save_teacher, train_teacher)
