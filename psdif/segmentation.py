"""Compatibility name: ``psdif.segmentation`` is ``psdif.semantics.segmentation`` (the same module object), kept so that code written
against the original flat layout (and the checks that call ``psdif.segmentation.*``) keeps working."""

import sys

from psdif.semantics import segmentation as _module

sys.modules[__name__] = _module
