"""The job description of one molecule, handed from fragmentation to QC and to the fit."""

from __future__ import annotations

from typing import Any

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from bespoke_fractal.schema.fragments import FragmentedMolecule, TorsionTarget
from bespoke_fractal.schema.identity import Dihedral, TorsionIdentity, canonicalize_torsion, default_dihedral
from bespoke_fractal.schema.optimizers import ForceBalanceSettings, SMIRKSSettings
from bespoke_fractal.schema.qc import QCSpec


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
    drive_parent: bool = Field(
        False, description="also drive every target bond on the whole parent (scored, not fitted)"
    )

    @model_serializer(mode="wrap")
    def _serialize(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # drive_parent is left out when False, so a job description written before the field
        # existed, or without it, keeps the same JSON (and the same fit key, a hash of it)
        data = handler(self)
        if not self.drive_parent:
            data.pop("drive_parent", None)
        return data

    @property
    def targets(self) -> list[TorsionTarget]:
        return self.fragmentation.targets

    def parent_molecule(self) -> Molecule:
        return Molecule.from_mapped_smiles(self.smiles, allow_undefined_stereo=True)

    def parent_drives(self) -> list[tuple[int, Dihedral, TorsionIdentity]]:
        """The drive of each target bond on the whole parent: (target index, parent dihedral,
        its torsion identity), whether or not ``drive_parent`` is set.

        The dihedral is the target's ``parent_dihedral``, or, when that ends on a capping atom,
        the project's default dihedral of the parent around the target's first bond. A target
        whose fragment is the parent itself needs no second drive and is left out.
        """
        parent = self.parent_molecule()
        drives = []
        for index, target in enumerate(self.targets):
            dihedral = target.parent_dihedral
            if dihedral is None:
                dihedral = default_dihedral(parent, target.parent_bond)
            identity = canonicalize_torsion(parent, dihedral).identity
            if identity.key != target.identity.key:
                drives.append((index, tuple(dihedral), identity))
        return drives
