"""What the fragmentation stage hands on: fragments, and which torsion of which fragment is
driven for each target bond of the parent."""

from __future__ import annotations

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.schema.identity import Dihedral, TorsionIdentity

Bond = tuple[int, int]


class Fragment(BaseModel):
    """A fragment of the parent, with its own atom order."""

    model_config = ConfigDict(frozen=True)

    mapped_smiles: str = Field(description="mapped SMILES; map number = fragment atom index + 1")
    parent_atoms: dict[int, int] = Field(
        description="fragment atom index -> parent atom index; capping atoms are absent"
    )

    def to_molecule(self) -> Molecule:
        return Molecule.from_mapped_smiles(self.mapped_smiles, allow_undefined_stereo=True)


class TorsionTarget(BaseModel):
    """One target bond of the parent (with its symmetry-equivalent copies) and its drive."""

    model_config = ConfigDict(frozen=True)

    parent_bonds: list[Bond] = Field(
        description="symmetry-equivalent bonds of the parent (atom indices); the first is driven"
    )
    fragment: int = Field(description="index into the fragments list (one fragment per target)")
    fragment_dihedral: Dihedral = Field(description="the driven dihedral, in fragment atom indices")
    parent_dihedral: Dihedral | None = Field(
        None, description="the same dihedral in parent indices (None if it ends on a capping atom)"
    )
    identity: TorsionIdentity = Field(description="canonical name of the QC drive")

    @property
    def parent_bond(self) -> Bond:
        return self.parent_bonds[0]


class FragmentedMolecule(BaseModel):
    """The result of the fragmentation stage for one parent molecule."""

    model_config = ConfigDict(frozen=True)

    parent_smiles: str = Field(description="mapped SMILES of the parent, in the user's atom order")
    fragmenter: str = Field(description="the fragmenter type that made the fragments")
    fragments: list[Fragment]
    targets: list[TorsionTarget]
    seconds: float = Field(description="wall time of fragmentation")
    am1_computed: int = Field(0, description="AM1 bond-order calculations run")
    am1_reused: int = Field(0, description="AM1 bond-order calculations taken from the cache")

    def parent_molecule(self) -> Molecule:
        return Molecule.from_mapped_smiles(self.parent_smiles, allow_undefined_stereo=True)

    @property
    def unique_identities(self) -> list[TorsionIdentity]:
        """The distinct QC drives this molecule needs, in target order."""
        seen: dict[str, TorsionIdentity] = {}
        for target in self.targets:
            seen.setdefault(target.identity.key, target.identity)
        return list(seen.values())
