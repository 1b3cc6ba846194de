"""The fit's data: QC torsion profiles, bespoke parameters, and what a fit of one molecule produced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.schema.fragments import Bond
from bespoke_fractal.schema.identity import Dihedral


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


class UnfittedTarget(BaseModel):
    """A target torsion left with the initial force field's parameters, and why."""

    target_index: int
    parent_bonds: list[Bond]
    reason: str


class ProfileScore(BaseModel):
    """RMSE and largest error (kcal/mol) of an MM torsion profile against QC."""

    rmse: float
    max_error: float


class TorsionFitReport(BaseModel):
    """How one target torsion came out of the fit.

    Scores are RMSE and largest error in kcal/mol over the grid points whose QC energy is within
    the workflow's ``energy_cutoff``, MM shifted by its mean offset from QC over those points
    (`profiles` module). "before" is the initial force field, "after" the written one (with any
    reverted parameters reverted). MM profiles are kcal/mol relative to their lowest point.
    """

    target_index: int
    parent_bonds: list[Bond]
    parameter_ids: list[str]
    angles: list[int]
    qc: list[float] = Field(description="QC profile of the fragment, kcal/mol relative to its minimum")
    qc_barrier: float = Field(description="highest minus lowest QC energy of the grid, kcal/mol")
    scored_points: int = Field(description="grid points within energy_cutoff, the ones scored")
    relaxed_initial: list[float] = Field(description="relaxed MM scan, initial force field, fragment")
    relaxed_final: list[float] = Field(description="relaxed MM scan, written force field, fragment")
    frozen_initial: list[float] = Field(description="frozen-protocol MM profile, initial force field")
    frozen_final: list[float] = Field(description="frozen-protocol MM profile, written force field")
    relaxed_before: ProfileScore = Field(description="relaxed-scan score on the fragment, initial")
    relaxed_after: ProfileScore = Field(description="relaxed-scan score on the fragment, written")
    frozen_before: ProfileScore = Field(description="frozen-protocol (ForceBalance/BespokeFit) score")
    frozen_after: ProfileScore
    parent_before: ProfileScore | None = Field(
        None, description="relaxed MM scan of the parent from one RDKit conformer against the fragment's QC"
    )
    parent_after: ProfileScore | None = None
    parent_dihedral: tuple[int, int, int, int] | None = Field(
        None, description="the parent dihedral driven with QC (drive_parent), parent atom indices"
    )
    parent_angles: list[int] | None = None
    parent_qc: list[float] | None = Field(None, description="QC profile of the parent drive")
    parent_relaxed_initial: list[float] | None = None
    parent_relaxed_final: list[float] | None = None
    parent_relaxed_before: ProfileScore | None = Field(
        None, description="relaxed-scan score on the parent's own QC drive, initial force field"
    )
    parent_relaxed_after: ProfileScore | None = None
    worse: bool = Field(False, description="the fitted parameters raised this torsion's relaxed-scan RMSE")
    kept_initial: bool = Field(False, description="the initial force field's parameters were kept")
    plot: Path | None = None
    parent_plot: Path | None = None


class OptimizationResult(BaseModel):
    """The outcome of fitting one molecule."""

    schema_id: str
    smiles: str
    offxml: Path | None = Field(None, description="initial force field + bespoke torsions")
    converged: bool
    iterations: int
    message: str = ""
    fit_seconds: float
    torsions: list[TorsionFitReport] = Field(default_factory=list)
    unfitted: list[UnfittedTarget] = Field(
        default_factory=list, description="targets left with the initial parameters (no usable QC), and why"
    )
    work_directory: Path | None = Field(None, description="ForceBalance's directory, kept on failure")

    @property
    def mean_rmse_before(self) -> float:
        """Mean relaxed-scan RMSE over the fitted torsions with the initial force field."""
        return _mean([t.relaxed_before.rmse for t in self.torsions])

    @property
    def mean_rmse_after(self) -> float:
        """Mean relaxed-scan RMSE over the fitted torsions with the written force field."""
        return _mean([t.relaxed_after.rmse for t in self.torsions])

    @property
    def mean_frozen_rmse_before(self) -> float:
        return _mean([t.frozen_before.rmse for t in self.torsions])

    @property
    def mean_frozen_rmse_after(self) -> float:
        return _mean([t.frozen_after.rmse for t in self.torsions])


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)
