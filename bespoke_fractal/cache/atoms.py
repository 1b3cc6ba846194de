"""Atom orders: from a source drive's atom order to the canonical one its geometries are kept in."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from openff.toolkit import Molecule

from bespoke_fractal.cache.archive import CacheError
from bespoke_fractal.schema.identity import TorsionIdentity, automorphism, canonicalize_torsion


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
        image = automorphism(rdmol, direct, goal)
        if image is not None:
            moved = [0] * len(order)
            for atom, new in enumerate(image):
                moved[new] = order[atom]
            return torsion.identity, moved
    raise CacheError(f"no atom mapping takes dihedral {tuple(dihedral)} onto {target}")


def reorder(geometry: Sequence[Sequence[float]] | np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``geometry`` (n × 3) with row ``i`` taken from row ``order[i]``."""
    return np.asarray(geometry, dtype=float).reshape(-1, 3)[list(order)]
