"""The job description of one molecule, handed from fragmentation to QC and to the fit."""

from __future__ import annotations

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.fragmentation.models import FragmentedMolecule, TorsionTarget
from bespoke_fractal.optimization import ForceBalanceSettings, SMIRKSSettings
from bespoke_fractal.qc.specification import QCSpec


class BespokeOptimizationSchema(BaseModel):
    """One parent molecule with its fragments, torsion targets and the workflow's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="stable id of this molecule under this workflow")
    smiles: str = Field(description="mapped SMILES of the parent, in the user's atom order")
    initial_force_field: str
    target_torsion_smirks: list[str]
    qc_spec: QCSpec
    optimizer: ForceBalanceSettings
    smirks_settings: SMIRKSSettings
    fragmentation: FragmentedMolecule

    @property
    def targets(self) -> list[TorsionTarget]:
        return self.fragmentation.targets

    def parent_molecule(self) -> Molecule:
        return Molecule.from_mapped_smiles(self.smiles, allow_undefined_stereo=True)
