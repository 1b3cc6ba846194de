"""Data passed between the parts of the optimisation stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

Dihedral = tuple[int, int, int, int]


class TorsionProfile(BaseModel):
    """The QC reference of one driven torsion, in the fragment's own atom order."""

    model_config = ConfigDict(frozen=True)

    target_index: int = Field(description="index of the TorsionTarget in the job description")
    mapped_smiles: str = Field(description="the fragment; map number = atom index + 1")
    dihedral: Dihedral = Field(description="the driven dihedral, fragment atom indices")
    angles: list[int] = Field(description="grid angles, degrees, ascending")
    energies_kcal_mol: list[float] = Field(description="QC energies relative to the lowest, kcal/mol")
    geometries_angstrom: list[list[list[float]]] = Field(description="optimised QC geometries, Å")

    def molecule(self) -> Molecule:
        """The fragment with one conformer per grid point."""
        from openff.units import unit

        molecule = Molecule.from_mapped_smiles(self.mapped_smiles, allow_undefined_stereo=True)
        for geometry in self.geometries_angstrom:
            molecule.add_conformer(unit.Quantity(np.asarray(geometry), unit.angstrom))
        return molecule


class BespokeTorsion(BaseModel):
    """One bespoke proper-torsion parameter (SMIRNOFF units: degrees, kcal/mol)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="parameter id; names the parent bond it was made for")
    smirks: str
    target_index: int
    periodicity: list[int]
    phase: list[float] = Field(description="degrees")
    k: list[float] = Field(description="kcal/mol")
    idivf: list[float]
    parent_torsions: list[Dihedral] = Field(
        default_factory=list, description="the parent's torsion quartets it is for (parent atom indices)"
    )
    target_indices: list[int] = Field(
        default_factory=list,
        description="every target it is for (several when their fragments' drives are the same)",
    )
    fragment_torsions: dict[int, list[Dihedral]] = Field(
        default_factory=dict,
        description="target index -> its quartets around the driven bond of that target's fragment",
    )
    initial_id: str | None = Field(None, description="the initial parameter these quartets matched")


class ForceBalanceResult(BaseModel):
    """What one ForceBalance run did."""

    converged: bool
    iterations: int
    objective_initial: float | None = None
    objective_final: float | None = None
    seconds: float
    message: str = Field("", description="one line; why it stopped when it did not converge")
    fitted_offxml: str | None = Field(None, description="the fitted force field, SMIRNOFF XML text")
    work_directory: Path | None = Field(None, description="kept when the fit failed")
