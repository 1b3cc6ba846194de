"""The fragmentation stage: target bonds of a parent -> fragments -> torsion identities."""

from __future__ import annotations

import time
from collections.abc import Sequence

from openff.toolkit import Molecule

from bespoke_fractal.errors import FragmentationError, NothingToFitError
from bespoke_fractal.fragmentation.am1_cache import AM1BondOrderCache
from bespoke_fractal.fragmentation.engines import FragmenterBase, NoFragmentation
from bespoke_fractal.fragmentation.targets import find_target_bonds, symmetry_groups
from bespoke_fractal.schema.fragments import Fragment, FragmentedMolecule, TorsionTarget
from bespoke_fractal.schema.identity import canonicalize_torsion, default_dihedral


def fragment_molecule(
    molecule: Molecule,
    smarts: Sequence[str],
    fragmenter: FragmenterBase | None,
    cache: AM1BondOrderCache | None = None,
) -> FragmentedMolecule:
    """Fragments of `molecule` and the drive of every symmetry-distinct target bond.

    Raises NothingToFitError when no bond matches `smarts`.
    """
    start = time.perf_counter()
    smarts = list(smarts)
    cache = cache or AM1BondOrderCache()
    fragmenter = fragmenter or NoFragmentation()
    bonds = find_target_bonds(molecule, smarts)
    if not bonds:
        raise NothingToFitError(
            f"{molecule.to_smiles(explicit_hydrogens=False)}: nothing to fit "
            f"(no non-ring bond matches the target torsion SMARTS {smarts})"
        )
    groups = symmetry_groups(molecule, bonds)
    before = cache.stats.model_copy()
    by_bond = fragmenter.fragment(molecule, smarts, cache)
    fragments: list[Fragment] = []
    targets = []
    for group in groups:
        bond = group[0]
        if bond not in by_bond:
            raise FragmentationError(f"{fragmenter.type} fragmenter made no fragment for bond {bond}")
        piece, parent_atoms = by_bond[bond]
        fragment = Fragment(mapped_smiles=piece.to_smiles(mapped=True), parent_atoms=parent_atoms)
        fragments.append(fragment)
        # drive the atoms the fragment was built around, not a symmetry image of them
        to_fragment = {parent: index for index, parent in parent_atoms.items()}
        molecule_of_fragment = fragment.to_molecule()
        dihedral = default_dihedral(molecule_of_fragment, (to_fragment[bond[0]], to_fragment[bond[1]]))
        mapped = all(i in parent_atoms for i in dihedral)
        targets.append(
            TorsionTarget(
                parent_bonds=group,
                fragment=len(fragments) - 1,
                fragment_dihedral=dihedral,
                parent_dihedral=tuple(parent_atoms[i] for i in dihedral) if mapped else None,
                identity=canonicalize_torsion(molecule_of_fragment, dihedral).identity,
            )
        )
    return FragmentedMolecule(
        parent_smiles=molecule.to_smiles(mapped=True),
        fragmenter=fragmenter.type,
        fragments=fragments,
        targets=targets,
        seconds=time.perf_counter() - start,
        am1_computed=cache.stats.computed - before.computed,
        am1_reused=cache.stats.reused - before.reused,
    )
