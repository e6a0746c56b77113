"""Compatibility name: ``psdif.kitti`` is ``psdif.data.kitti`` (the same module object), kept so that code written
against the original flat layout (and the checks that call ``psdif.kitti.*``) keeps working."""

import sys

from psdif.data import kitti as _module

sys.modules[__name__] = _module
