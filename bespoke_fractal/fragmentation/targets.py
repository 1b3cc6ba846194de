"""Which bonds of a molecule are fitted: SMARTS matches, grouped by molecular symmetry."""

from __future__ import annotations

from collections.abc import Sequence

from openff.toolkit import Molecule
from rdkit import Chem

from bespoke_fractal.schema.fragments import Bond
from bespoke_fractal.schema.identity import equivalent_bond_key

DEFAULT_TARGET_SMARTS = "[!#1]~[!$(*#*)&!D1:1]-,=;!@[!$(*#*)&!D1:2]~[!#1]"
"""BespokeFit's rotatable bond: not terminal, not triple-bonded, not in a ring."""


def check_target_smarts(smarts: str) -> str:
    """`smarts` if it parses and tags exactly the two atoms of a bond as :1 and :2."""
    pattern = Chem.MolFromSmarts(smarts)
    if pattern is None:
        raise ValueError(f"target SMARTS '{smarts}' does not parse")
    tagged = [(a.GetAtomMapNum(), a.GetIdx()) for a in pattern.GetAtoms() if a.GetAtomMapNum()]
    if sorted(tag for tag, _ in tagged) != [1, 2]:
        raise ValueError(f"target SMARTS '{smarts}' must tag exactly the two bond atoms as :1 and :2")
    if pattern.GetBondBetweenAtoms(tagged[0][1], tagged[1][1]) is None:
        raise ValueError(f"target SMARTS '{smarts}': atoms :1 and :2 must be bonded")
    return smarts


def find_target_bonds(molecule: Molecule, smarts: Sequence[str]) -> list[Bond]:
    """Sorted atom pairs of every non-ring bond matched by any of the SMARTS."""
    rdmol = molecule.to_rdkit()
    bonds = set()
    for pattern in smarts:
        for i, j in molecule.chemical_environment_matches(pattern, unique=True):
            bond = rdmol.GetBondBetweenAtoms(i, j)
            if bond is not None and not bond.IsInRing():
                bonds.add((min(i, j), max(i, j)))
    return sorted(bonds)


def symmetry_groups(molecule: Molecule, bonds: Sequence[Bond]) -> list[list[Bond]]:
    """`bonds` grouped into symmetry-equivalent sets, in order of each set's first bond."""
    groups: dict[Bond, list[Bond]] = {}
    for bond in bonds:
        groups.setdefault(equivalent_bond_key(molecule, bond), []).append(bond)
    return list(groups.values())
