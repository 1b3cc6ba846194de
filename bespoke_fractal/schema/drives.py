"""A submitted torsion drive and its outcome: the QC stage's output, the fit's input."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from bespoke_fractal.schema.identity import CanonicalTorsion, Dihedral
from bespoke_fractal.schema.qc import QCSpec


def grid_angles(spacing: int) -> list[int]:
    """The angles of a 1-D torsiondrive grid, as torsiondrive names them (-180 < a <= 180)."""
    return list(range(-180 + spacing, 181, spacing))


def json_key(key) -> tuple[int, ...]:
    """A grid key of a torsiondrive record as a tuple of angles (keys come as tuples or JSON)."""
    if isinstance(key, str):
        return tuple(json.loads(key))
    return tuple(key)


class GridPoint(BaseModel):
    """One point of a torsion profile."""

    angle: int = Field(description="driven dihedral angle, degrees")
    energy_hartree: float
    energy_kcal_mol: float
    relative_energy_kcal_mol: float = Field(description="relative to the profile's minimum")
    geometry_angstrom: list[list[float]] = Field(description="optimised geometry, input atom order")
    optimization_id: int


class TorsionDrive(BaseModel):
    """A drive that has been submitted: where it lives on the server and what it is."""

    record_id: int
    dataset_name: str
    entry_name: str
    spec: QCSpec
    torsion: CanonicalTorsion
    new_entry: bool = Field(description="this submission created the dataset entry")

    @property
    def requested_dihedral(self) -> Dihedral:
        return self.torsion.input_dihedral

    @property
    def driven_dihedral(self) -> Dihedral:
        """The dihedral the grid angles refer to, in the input molecule's atom indices."""
        return self.torsion.canonical_dihedral_in_input()


class TorsionDriveResult(BaseModel):
    """The outcome of one drive: a profile when complete, an error line when not."""

    record_id: int
    status: str
    spec: QCSpec
    identity_key: str
    dataset_name: str
    requested_dihedral: Dihedral
    driven_dihedral: Dihedral
    grid: list[GridPoint] = Field(default_factory=list)
    error: str | None = None
    energy_note: str | None = None
    resets: int = 0
    missing_angles: list[int] = Field(
        default_factory=list, description="grid angles with no result (a drive that failed part-way)"
    )

    @property
    def ok(self) -> bool:
        return self.status == "complete" and not self.error

    @property
    def coverage(self) -> float:
        """Share of the grid with a result (1.0 for a complete drive)."""
        total = len(self.grid) + len(self.missing_angles)
        return len(self.grid) / total if total else 0.0

    def usable(self, min_coverage: float) -> bool:
        """Complete, or failed part-way with at least ``min_coverage`` of its grid done (an
        energy check that fails leaves no grid, so such a drive is never usable)."""
        return self.ok or (self.status == "error" and bool(self.grid) and self.coverage >= min_coverage)
