"""The QC stage: torsion drives on QCFractal, cached and deduplicated.

Names are imported on first use, so that a QC task process importing ``qc.programs`` (through
``compat.qcengine``) does not pay for OpenFF and torsiondrive.
"""

from __future__ import annotations

import importlib
from typing import Any

_SOURCES = {
    "TorsionDriveStage": "bespoke_fractal.qc.torsiondrive",
    "GridPoint": "bespoke_fractal.schema.drives",
    "TorsionDrive": "bespoke_fractal.schema.drives",
    "TorsionDriveResult": "bespoke_fractal.schema.drives",
    "CanonicalTorsion": "bespoke_fractal.schema.identity",
    "TorsionIdentity": "bespoke_fractal.schema.identity",
    "canonicalize_torsion": "bespoke_fractal.schema.identity",
    "default_dihedral": "bespoke_fractal.schema.identity",
    "QCSpec": "bespoke_fractal.schema.qc",
    "get_preset": "bespoke_fractal.schema.qc",
    "list_presets": "bespoke_fractal.schema.qc",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value
