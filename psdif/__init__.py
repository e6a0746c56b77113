"""PSDIF: parallel multi-scale semantic-depth interactive fusion network for self-supervised monocular depth.

The paper's core lives at the top: ``config`` (params schema), ``variants`` (Table 3 switches), ``models/``
(MSFAN, PSDIFM, baseline, pose), ``geometry``, ``losses`` and ``train``. Around it: ``data/`` (KITTI raw,
download, filter, dataset, Make3D, the mini-KITTI generator), ``semantics/`` (Cityscapes pseudo-labels and
boundary sets), ``evaluation/`` (protocols, tables, figures), ``pipeline`` (dvc.yaml) and ``cli``.
Importing the package does no work. ``docs/design.md`` maps the paper's equations to functions and tests.
"""

__version__ = "0.1.0"
