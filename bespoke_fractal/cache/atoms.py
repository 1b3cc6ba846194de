"""Atom orders: from a source drive's atom order to the canonical one its geometries are kept in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from openff.toolkit import Molecule
from rdkit import Chem

from bespoke_fractal.cache.archive import CacheError
from bespoke_fractal.qc.identity import TorsionIdentity, canonicalize_torsion

_SLOT = "bespoke_replay_slot"


def canonical_order(molecule: Molecule, dihedral: Sequence[int]) -> tuple[TorsionIdentity, list[int]]:
    """The identity of the drive of ``dihedral`` in ``molecule``, and ``order``: ``order[i]`` is
    the ``molecule`` atom that becomes canonical atom ``i``.

    The order maps ``dihedral`` exactly onto the identity's dihedral (or its reverse, which has
    the same angle), composing the canonical ranks with a graph automorphism when the source drove
    a symmetry image of the canonical dihedral (another hydrogen of a methyl group, say).
    """
    torsion = canonicalize_torsion(molecule, dihedral)
    order = list(torsion.canonical_to_input)
    position = {atom: index for index, atom in enumerate(order)}
    direct = tuple(position[i] for i in torsion.input_dihedral)
    target = torsion.identity.dihedral
    if direct in (target, target[::-1]):
        return torsion.identity, order
    rdmol = torsion.identity.to_molecule().to_rdkit()
    for goal in (target, target[::-1]):
        image = _automorphism(rdmol, direct, goal)
        if image is not None:
            moved = [0] * len(order)
            for atom, new in enumerate(image):
                moved[new] = order[atom]
            return torsion.identity, moved
    raise CacheError(f"no atom mapping takes dihedral {tuple(dihedral)} onto {target}")


def reorder(geometry: Sequence[Sequence[float]] | np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``geometry`` (n × 3) with row ``i`` taken from row ``order[i]``."""
    return np.asarray(geometry, dtype=float).reshape(-1, 3)[list(order)]


def _automorphism(rdmol: Chem.Mol, dihedral: Sequence[int], goal: Sequence[int]) -> tuple[int, ...] | None:
    """A stereo-preserving automorphism as ``image[atom]``, taking ``dihedral`` onto ``goal``."""
    params = Chem.SubstructMatchParameters()
    params.useChirality = True
    params.maxMatches = 1
    params.atomProperties = [_SLOT]
    matches = _tagged(rdmol, goal).GetSubstructMatches(_tagged(rdmol, dihedral), params)
    return tuple(matches[0]) if matches else None


def _tagged(rdmol: Chem.Mol, dihedral: Sequence[int]) -> Chem.Mol:
    tagged = Chem.Mol(rdmol)
    for atom in tagged.GetAtoms():
        atom.SetIntProp(_SLOT, 0)
    for slot, index in enumerate(dihedral, start=1):
        tagged.GetAtomWithIdx(int(index)).SetIntProp(_SLOT, slot)
    return tagged
