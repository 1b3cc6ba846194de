"""The QC stage: torsion drives on QCFractal, cached and deduplicated."""

from bespoke_fractal.qc.identity import (
    CanonicalTorsion,
    TorsionIdentity,
    canonicalize_torsion,
    default_dihedral,
)
from bespoke_fractal.qc.specification import QCSpec, get_preset, list_presets
from bespoke_fractal.qc.torsiondrive import (
    GridPoint,
    TorsionDrive,
    TorsionDriveResult,
    TorsionDriveStage,
)

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
