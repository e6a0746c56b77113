"""PSDIF: parallel multi-scale semantic-depth interactive fusion network for self-supervised depth.

Importing the package does no work; see the submodules (SPEC-style layout in the README).
"""

__version__ = "0.1.0"
