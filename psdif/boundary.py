"""Compatibility name: ``psdif.boundary`` is ``psdif.semantics.boundary`` (the same module object), kept so that code written
against the original flat layout (and the checks that call ``psdif.boundary.*``) keeps working."""

import sys

from psdif.semantics import boundary as _module

sys.modules[__name__] = _module
