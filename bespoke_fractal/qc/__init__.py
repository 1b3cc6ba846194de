"""The QC stage: torsion drives on QCFractal, cached and deduplicated."""

from bespoke_fractal.qc.torsiondrive import TorsionDriveStage
from bespoke_fractal.schema.drives import GridPoint, TorsionDrive, TorsionDriveResult
from bespoke_fractal.schema.identity import (
    CanonicalTorsion,
    TorsionIdentity,
    canonicalize_torsion,
    default_dihedral,
)
from bespoke_fractal.schema.qc import QCSpec, get_preset, list_presets

__all__ = [
    "CanonicalTorsion",
    "GridPoint",
    "QCSpec",
    "TorsionDrive",
    "TorsionDriveResult",
    "TorsionDriveStage",
    "TorsionIdentity",
    "canonicalize_torsion",
    "default_dihedral",
    "get_preset",
    "list_presets",
]
