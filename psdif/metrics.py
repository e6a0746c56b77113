"""Compatibility name: ``psdif.metrics`` is ``psdif.evaluation.metrics`` (the same module object), kept so that code written
against the original flat layout (and the checks that call ``psdif.metrics.*``) keeps working."""

import sys

from psdif.evaluation import metrics as _module

sys.modules[__name__] = _module
