"""Canonical identity of a 1-D torsion drive and deterministic starting geometries.

QCFractal deduplicates torsion drives only when the starting molecules are bit-identical.
A `TorsionIdentity` names a torsion drive independently of the input atom order, the input
conformer, the direction the dihedral is written in and which of several symmetry-equivalent
dihedrals was named; `starting_geometries` derives the starting conformers from the identity
alone, so the same torsion always gives the same QCFractal molecules.

Canonical atom order: RDKit canonical ranks (chirality included, ties broken), heavy atoms
first, as `Molecule.canonical_order_atoms` does. Undefined stereochemistry is allowed (a
fragment can lose a stereocentre its parent defines); the identity then has no stereo mark and
ETKDG's fixed seed still gives one geometry. Canonical order and ETKDG
geometries are only guaranteed stable for a fixed RDKit version.
"""

import operator
from collections.abc import Sequence

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict
from rdkit import Chem
from rdkit.Chem import AllChem

Dihedral = tuple[int, int, int, int]

CONFORMER_SEED = 0xB35B0CE
"""ETKDG random seed, the same for every identity."""
PRUNE_RMS_ANGSTROM = 0.5
"""ETKDG prunes conformers closer than this heavy-atom RMSD."""
COORDINATE_DECIMALS = 4
"""Starting coordinates are rounded to 1e-4 Å."""

_SLOT = "bespoke_dihedral_slot"


class TorsionIdentity(BaseModel):
    """Canonical name of a 1-D torsion drive: molecule plus driven dihedral."""

    model_config = ConfigDict(frozen=True)

    mapped_smiles: str
    """Canonical mapped SMILES with explicit H; atom map number = canonical index + 1."""
    dihedral: Dihedral
    """Driven dihedral in canonical indices: the smallest of its symmetry images."""

    @property
    def key(self) -> str:
        """Dataset entry name: ``"{mapped_smiles}|a-b-c-d"``."""
        return f"{self.mapped_smiles}|{'-'.join(str(i) for i in self.dihedral)}"

    @property
    def central_bond(self) -> tuple[int, int]:
        """The rotated bond ``(b, c)`` in canonical indices, in dihedral order."""
        return self.dihedral[1], self.dihedral[2]

    def to_molecule(self) -> Molecule:
        """The molecule with its atoms in canonical order (no conformers)."""
        # fragments may keep a stereocentre undefined that their parent defines
        return Molecule.from_mapped_smiles(self.mapped_smiles, allow_undefined_stereo=True)


class CanonicalTorsion(BaseModel):
    """A torsion identity plus the atom mapping back to the user's input molecule."""

    model_config = ConfigDict(frozen=True)

    identity: TorsionIdentity
    canonical_to_input: list[int]
    """``canonical_to_input[i]`` is the input index of canonical atom ``i``."""
    input_dihedral: Dihedral
    """The dihedral the identity was made from, in input indices."""

    def canonical_dihedral_in_input(self) -> Dihedral:
        """The dihedral actually driven (``identity.dihedral``) in input indices."""
        a, b, c, d = (self.canonical_to_input[i] for i in self.identity.dihedral)
        return a, b, c, d


def canonicalize_torsion(molecule: Molecule, dihedral: Sequence[int]) -> CanonicalTorsion:
    """Canonical identity of the drive of `dihedral` (input atom indices) in `molecule`."""
    rdmol = molecule.to_rdkit()
    input_dihedral = _validate_dihedral(rdmol, dihedral)
    canonical_to_input = _canonical_order(rdmol)
    input_to_canonical = {old: new for new, old in enumerate(canonical_to_input)}
    mapped_smiles = molecule.remap(input_to_canonical, current_to_new=True).to_smiles(mapped=True)
    # symmetry is computed on the molecule rebuilt from the SMILES: it depends on nothing else
    canonical_rdmol = Molecule.from_mapped_smiles(mapped_smiles, allow_undefined_stereo=True).to_rdkit()
    a, b, c, d = (input_to_canonical[i] for i in input_dihedral)
    identity = TorsionIdentity(
        mapped_smiles=mapped_smiles,
        dihedral=_smallest_equivalent(canonical_rdmol, (a, b, c, d)),
    )
    return CanonicalTorsion(
        identity=identity,
        canonical_to_input=canonical_to_input,
        input_dihedral=input_dihedral,
    )


def default_dihedral(molecule: Molecule, bond: tuple[int, int]) -> Dihedral:
    """A dihedral (input indices) around `bond`, with the heaviest terminal atoms.

    Ties between terminal atoms are broken by the lowest canonical index, so the same bond
    gives the same canonical identity whatever the input atom order.
    """
    rdmol = molecule.to_rdkit()
    b, c = (_atom_index(rdmol, i) for i in bond)
    _check_central_bond(rdmol, b, c)
    canonical_index = {old: new for new, old in enumerate(_canonical_order(rdmol))}

    def terminal(centre: int, other: int) -> int:
        options = [n.GetIdx() for n in rdmol.GetAtomWithIdx(centre).GetNeighbors()]
        options.remove(other)
        if not options:
            raise ValueError(
                f"bond {_name(rdmol, b)}-{_name(rdmol, c)} has no dihedral: "
                f"{_name(rdmol, centre)} has no neighbour other than {_name(rdmol, other)}"
            )
        return min(
            options,
            key=lambda i: (-rdmol.GetAtomWithIdx(i).GetAtomicNum(), canonical_index[i]),
        )

    return terminal(b, c), b, c, terminal(c, b)


def starting_geometries(identity: TorsionIdentity, n_conformers: int) -> list[np.ndarray]:
    """Up to `n_conformers` ETKDGv3 conformers of `identity`, deterministic to the bit.

    Each array has shape (n_atoms, 3), is in Å, in canonical atom order and rounded to
    1e-4 Å. Fewer conformers than asked are returned if ETKDG prunes or fails some.
    """
    if n_conformers < 1:
        raise ValueError(f"n_conformers must be at least 1, got {n_conformers}")
    rdmol = identity.to_molecule().to_rdkit()
    params = AllChem.ETKDGv3()
    params.randomSeed = CONFORMER_SEED
    params.pruneRmsThresh = PRUNE_RMS_ANGSTROM
    params.numThreads = 1
    conformer_ids = list(AllChem.EmbedMultipleConfs(rdmol, numConfs=n_conformers, params=params))
    if not conformer_ids:
        raise ValueError(f"ETKDG could not embed any conformer of {identity.mapped_smiles}")
    # + 0.0 turns -0.0 into 0.0
    return [np.round(rdmol.GetConformer(i).GetPositions(), COORDINATE_DECIMALS) + 0.0 for i in conformer_ids]


def equivalent_bond_key(molecule: Molecule, bond: Sequence[int]) -> tuple[int, int]:
    """The smallest bond (sorted input indices) that an automorphism maps `bond` onto.

    Two bonds are symmetry-equivalent exactly when their keys are equal, e.g. the two
    ring-CH2 bonds of 1,4-diethylbenzene.
    """
    rdmol = molecule.to_rdkit()
    b, c = (_atom_index(rdmol, i) for i in bond)
    if rdmol.GetBondBetweenAtoms(b, c) is None:
        raise ValueError(f"atoms {_name(rdmol, b)} and {_name(rdmol, c)} are not bonded")
    classes = list(Chem.CanonicalRankAtoms(rdmol, breakTies=False, includeChirality=True))
    pattern = (classes[b], classes[c])
    # smallest bond first, whichever way round it is matched: a bond whose image is written the
    # other way round (lower index at the other end) must give the same key
    candidates = sorted(
        (
            pair
            for other in rdmol.GetBonds()
            for pair in (
                (other.GetBeginAtomIdx(), other.GetEndAtomIdx()),
                (other.GetEndAtomIdx(), other.GetBeginAtomIdx()),
            )
            if (classes[pair[0]], classes[pair[1]]) == pattern
        ),
        key=lambda pair: (min(pair), max(pair), pair),
    )
    for i, j in candidates:
        if _is_image(rdmol, (b, c), (i, j)):
            return min(i, j), max(i, j)
    raise AssertionError("unreachable: the bond is an image of itself")


def canonical_atom_order(rdmol: Chem.Mol) -> list[int]:
    """Input atom indices in canonical order (see the module docstring)."""
    return _canonical_order(rdmol)


def _canonical_order(rdmol: Chem.Mol) -> list[int]:
    """Input atom indices in canonical order: RDKit canonical ranks, heavy atoms first."""
    ranks = list(Chem.CanonicalRankAtoms(rdmol, breakTies=True, includeChirality=True))
    return sorted(
        range(rdmol.GetNumAtoms()),
        key=lambda i: (rdmol.GetAtomWithIdx(i).GetAtomicNum() == 1, ranks[i]),
    )


def _smallest_equivalent(rdmol: Chem.Mol, dihedral: Dihedral) -> Dihedral:
    """The lexicographically smallest image of `dihedral` under automorphisms and reversal.

    Candidates are paths whose atoms are in the same symmetry classes as the dihedral's;
    each is accepted only if a stereo-preserving automorphism maps the dihedral onto it.
    This avoids enumerating all automorphisms (which explodes with e.g. many methyl groups).
    """
    classes = list(Chem.CanonicalRankAtoms(rdmol, breakTies=False, includeChirality=True))
    pattern = [classes[i] for i in dihedral]

    def neighbours(i: int, slot: int) -> list[int]:
        atom = rdmol.GetAtomWithIdx(i)
        return [n.GetIdx() for n in atom.GetNeighbors() if classes[n.GetIdx()] == pattern[slot]]

    paths = {
        (a, b, c, d)
        for b in range(rdmol.GetNumAtoms())
        if classes[b] == pattern[1]
        for c in neighbours(b, 2)
        for a in neighbours(b, 0)
        if a != c
        for d in neighbours(c, 3)
        if d not in (a, b)
    }
    for candidate in sorted(paths | {p[::-1] for p in paths}):
        for path in (candidate, candidate[::-1]):
            if path in paths and _is_image(rdmol, dihedral, path):
                return candidate
    raise AssertionError("unreachable: the dihedral is an image of itself")


def _is_image(rdmol: Chem.Mol, dihedral: Sequence[int], image: Sequence[int]) -> bool:
    """Whether an automorphism of `rdmol` maps the atoms of `dihedral` one by one onto `image`."""
    return tuple(dihedral) == tuple(image) or automorphism(rdmol, dihedral, image) is not None


def automorphism(rdmol: Chem.Mol, dihedral: Sequence[int], goal: Sequence[int]) -> tuple[int, ...] | None:
    """A stereo-preserving automorphism of `rdmol` taking the atoms of `dihedral` one by one onto
    `goal`, as ``image[atom]``; None when there is none."""
    params = Chem.SubstructMatchParameters()
    params.useChirality = True
    params.maxMatches = 1
    params.atomProperties = [_SLOT]
    matches = _tagged(rdmol, goal).GetSubstructMatches(_tagged(rdmol, dihedral), params)
    return tuple(matches[0]) if matches else None


def _tagged(rdmol: Chem.Mol, dihedral: Sequence[int]) -> Chem.Mol:
    """A copy of `rdmol` whose listed atoms carry slots 1, 2, ... and all others slot 0."""
    tagged = Chem.Mol(rdmol)
    for atom in tagged.GetAtoms():
        atom.SetIntProp(_SLOT, 0)
    for slot, i in enumerate(dihedral, start=1):
        tagged.GetAtomWithIdx(int(i)).SetIntProp(_SLOT, slot)
    return tagged


def _validate_dihedral(rdmol: Chem.Mol, dihedral: Sequence[int]) -> Dihedral:
    """`dihedral` as a tuple after checking it is a bonded chain around a rotatable bond."""
    if len(dihedral) != 4:
        raise ValueError(f"a dihedral needs 4 atom indices, got {list(dihedral)}")
    a, b, c, d = (_atom_index(rdmol, i) for i in dihedral)
    if len({a, b, c, d}) != 4:
        raise ValueError(f"dihedral {(a, b, c, d)} must name 4 distinct atoms")
    for i, j in ((a, b), (b, c), (c, d)):
        if rdmol.GetBondBetweenAtoms(i, j) is None:
            raise ValueError(
                f"dihedral {(a, b, c, d)}: atoms {_name(rdmol, i)} and {_name(rdmol, j)} are not bonded"
            )
    _check_central_bond(rdmol, b, c)
    return a, b, c, d


def _check_central_bond(rdmol: Chem.Mol, b: int, c: int) -> None:
    """Raise ValueError unless atoms `b` and `c` are joined by a bond outside any ring."""
    bond = rdmol.GetBondBetweenAtoms(b, c)
    if bond is None:
        raise ValueError(f"atoms {_name(rdmol, b)} and {_name(rdmol, c)} are not bonded")
    if bond.IsInRing():
        raise ValueError(
            f"bond {_name(rdmol, b)}-{_name(rdmol, c)} is in a ring: "
            "a 1-D torsion drive of a ring bond is not meaningful"
        )


def _atom_index(rdmol: Chem.Mol, index: int) -> int:
    """`index` as an int after checking it names an atom of `rdmol`."""
    i = operator.index(index)
    if not 0 <= i < rdmol.GetNumAtoms():
        raise ValueError(f"atom index {i} is out of range for {rdmol.GetNumAtoms()} atoms")
    return i


def _name(rdmol: Chem.Mol, index: int) -> str:
    """Element symbol and index, e.g. ``C3``."""
    return f"{rdmol.GetAtomWithIdx(index).GetSymbol()}{index}"
