"""Canonical torsion identities and their starting geometries (real chemistry, no server)."""

import numpy as np
import pytest
from openff.toolkit import Molecule
from pydantic import ValidationError
from rdkit import Chem
from rdkit.Chem import AllChem

from bespoke_fractal.schema.identity import (
    CanonicalTorsion,
    Dihedral,
    TorsionIdentity,
    canonicalize_torsion,
    default_dihedral,
    equivalent_bond_key,
    starting_geometries,
)

pytestmark = pytest.mark.fast  # the fast tier: pytest -m fast


def shuffled(molecule: Molecule, seed: int) -> tuple[Molecule, dict[int, int]]:
    """`molecule` with its atoms permuted, and the old -> new index mapping."""
    permutation = np.random.default_rng(seed).permutation(molecule.n_atoms)
    mapping = {old: int(new) for old, new in enumerate(permutation)}
    return molecule.remap(mapping, current_to_new=True), mapping


def remapped(dihedral: Dihedral, mapping: dict[int, int]) -> Dihedral:
    a, b, c, d = (mapping[i] for i in dihedral)
    return a, b, c, d


def embedded(smiles: str, seed: int) -> Molecule:
    """A molecule in the atom order of `smiles` with one ETKDG conformer from `seed`."""
    rdmol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(rdmol, randomSeed=seed) == 0
    return Molecule.from_rdkit(rdmol)


def match(molecule: Molecule, smarts: str) -> Dihedral:
    """The first (sorted) match of a 4-atom mapped SMARTS."""
    a, b, c, d = sorted(molecule.chemical_environment_matches(smarts))[0]
    return a, b, c, d


def key(molecule: Molecule, dihedral: Dihedral) -> str:
    return canonicalize_torsion(molecule, dihedral).identity.key


@pytest.mark.parametrize(
    ("smiles", "smarts"),
    [
        ("CCCC", "[#6:1]-[#6:2]-[#6:3]-[#6:4]"),
        ("CCO", "[#1:1]-[#8:2]-[#6:3]-[#6:4]"),
        ("CCO", "[#1:1]-[#6X4:2]-[#6X4:3]-[#8:4]"),
    ],
)
def test_identity_independent_of_atom_order_and_direction(smiles: str, smarts: str) -> None:
    molecule = Molecule.from_smiles(smiles)
    dihedral = match(molecule, smarts)
    expected = canonicalize_torsion(molecule, dihedral).identity
    for seed in range(5):
        other, mapping = shuffled(molecule, seed)
        moved = remapped(dihedral, mapping)
        assert canonicalize_torsion(other, moved).identity == expected
        assert canonicalize_torsion(other, moved[::-1]).identity == expected
    # the identity is a fixed point
    assert canonicalize_torsion(expected.to_molecule(), expected.dihedral).identity == expected


def test_identity_independent_of_input_conformer_and_smiles_order() -> None:
    first, second = embedded("OCC", seed=1), embedded("CCO", seed=7)
    assert [a.symbol for a in first.atoms][:3] == ["O", "C", "C"]
    assert [a.symbol for a in second.atoms][:3] == ["C", "C", "O"]
    assert first.n_conformers == second.n_conformers == 1
    smarts = "[#1:1]-[#8:2]-[#6:3]-[#6:4]"
    assert key(first, match(first, smarts)) == key(second, match(second, smarts))


def test_all_symmetry_equivalent_dihedrals_give_one_identity() -> None:
    butane = Molecule.from_smiles("CCCC")
    matches = butane.chemical_environment_matches("[#1:1]-[#6:2]-[#6:3]-[#1:4]")
    central = {m for m in matches if {m[1], m[2]} == {1, 2}}
    assert len(central) == 8  # 2 x 2 hydrogens, both directions
    assert len({key(butane, m) for m in central}) == 1


def test_different_bonds_give_different_identities() -> None:
    butane = Molecule.from_smiles("CCCC")
    terminal_bond = default_dihedral(butane, (0, 1))
    central_bond = default_dihedral(butane, (1, 2))
    assert key(butane, terminal_bond) != key(butane, central_bond)
    # C0-C1 and C2-C3 are equivalent by symmetry
    assert key(butane, terminal_bond) == key(butane, default_dihedral(butane, (3, 2)))


@pytest.mark.parametrize(
    ("smiles", "smarts"),
    [
        ("OCc1ccc(CO)cc1", "[#8:1]-[#6X4:2]-[#6a:3]:[#6a:4]"),
        ("CC(C)c1ccc(cc1)C(C)C", "[#6X4:1]-[#6X4:2]-[#6a:3]:[#6a:4]"),
    ],
)
def test_para_substituted_benzene_bonds_are_equivalent(smiles: str, smarts: str) -> None:
    molecule = Molecule.from_smiles(smiles)
    matches = molecule.chemical_environment_matches(smarts)
    assert len({(m[1], m[2]) for m in matches}) == 2  # the two ring-substituent bonds
    keys = {key(molecule, m) for m in matches}
    assert len(keys) == 1
    other, mapping = shuffled(molecule, seed=3)
    assert {key(other, remapped(m, mapping)) for m in matches} == keys


@pytest.mark.parametrize("seed", range(8))
def test_equivalent_bonds_have_one_key_whichever_way_round(seed: int) -> None:
    """Hexane's C1-C2 and C4-C3 are images of each other with their ends swapped as written
    (lower index on the CH3 side in one, on the inner side in the other): one key."""
    hexane, mapping = shuffled(Molecule.from_smiles("CCCCCC"), seed)
    keys = {
        equivalent_bond_key(hexane, (mapping[b], mapping[c])) for b, c in ((1, 2), (4, 3), (2, 1), (3, 4))
    }
    assert len(keys) == 1
    assert equivalent_bond_key(hexane, (mapping[2], mapping[3])) not in keys


def test_non_equivalent_bonds_differ() -> None:
    diol = Molecule.from_smiles("OCc1ccc(CO)cc1")
    ring_bond = match(diol, "[#8:1]-[#6X4:2]-[#6a:3]:[#6a:4]")
    hydroxyl = match(diol, "[#1:1]-[#8:2]-[#6X4:3]-[#6a:4]")
    assert key(diol, ring_bond) != key(diol, hydroxyl)

    mixed = Molecule.from_smiles("OCc1ccc(CN)cc1")
    alcohol_side = match(mixed, "[#8:1]-[#6X4:2]-[#6a:3]:[#6a:4]")
    amine_side = match(mixed, "[#7:1]-[#6X4:2]-[#6a:3]:[#6a:4]")
    assert key(mixed, alcohol_side) != key(mixed, amine_side)


def test_default_dihedral_is_order_independent_and_picks_heavy_atoms() -> None:
    ethanol = Molecule.from_smiles("CCO")
    dihedral = default_dihedral(ethanol, (1, 2))
    assert [ethanol.atom(i).symbol for i in dihedral] == ["C", "C", "O", "H"]
    expected = key(ethanol, dihedral)
    for seed in range(5):
        other, mapping = shuffled(ethanol, seed)
        bond = (mapping[2], mapping[1])  # also reversed
        assert key(other, default_dihedral(other, bond)) == expected


@pytest.mark.parametrize(
    ("smiles", "bond", "message"),
    [
        ("CCO", (0, 2), "not bonded"),
        ("CCO", (2, 8), "no neighbour other than"),  # the O-H bond: H8 has no other neighbour
        ("Cc1ccccc1", (1, 2), "in a ring"),
        ("CCO", (0, 99), "out of range"),
    ],
)
def test_default_dihedral_rejects_bad_bonds(smiles: str, bond: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        default_dihedral(Molecule.from_smiles(smiles), bond)


@pytest.mark.parametrize(
    ("smiles", "dihedral", "message"),
    [
        ("C1CCCCC1", (0, 1, 2, 3), "in a ring"),
        ("CCCC", (0, 1, 3, 2), "not bonded"),
        ("CCCC", (0, 2, 1, 3), "not bonded"),
        ("CCCC", (0, 1, 2, 1), "distinct"),
        ("CCCC", (0, 1, 2, 99), "out of range"),
        ("CCCC", (0, 1, 2), "4 atom indices"),
    ],
)
def test_canonicalize_rejects_bad_dihedrals(smiles: str, dihedral: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonicalize_torsion(Molecule.from_smiles(smiles), dihedral)


def test_canonical_dihedral_maps_back_to_the_input() -> None:
    molecule, mapping = shuffled(Molecule.from_smiles("OCc1ccc(CN)cc1"), seed=11)
    dihedral = match(molecule, "[#7:1]-[#6X4:2]-[#6a:3]:[#6a:4]")
    torsion = canonicalize_torsion(molecule, dihedral)
    assert torsion.input_dihedral == dihedral
    assert sorted(torsion.canonical_to_input) == list(range(molecule.n_atoms))
    driven = torsion.canonical_dihedral_in_input()
    canonical = torsion.identity.to_molecule()
    assert [molecule.atom(i).atomic_number for i in driven] == [
        canonical.atom(i).atomic_number for i in torsion.identity.dihedral
    ]
    for i, j in zip(driven, driven[1:], strict=False):
        assert molecule.atom(i).is_bonded_to(molecule.atom(j))
    # every canonical bond is an input bond with the same order
    for bond in canonical.bonds:
        i, j = (torsion.canonical_to_input[k] for k in (bond.atom1_index, bond.atom2_index))
        assert molecule.get_bond_between(i, j).bond_order == bond.bond_order
    # the driven dihedral is equivalent to the one asked for
    assert canonicalize_torsion(molecule, driven).identity == torsion.identity


def test_charges_are_kept() -> None:
    molecule = Molecule.from_smiles("C[NH+](C)CC(=O)[O-]")
    dihedral = match(molecule, "[#7:1]-[#6:2]-[#6:3]=[#8:4]")
    identity = canonicalize_torsion(molecule, dihedral).identity
    assert "+" in identity.mapped_smiles and "-:" in identity.mapped_smiles
    charges = sorted(a.formal_charge.m for a in identity.to_molecule().atoms if a.formal_charge.m)
    assert charges == [-1, 1]
    other, mapping = shuffled(molecule, seed=5)
    assert canonicalize_torsion(other, remapped(dihedral, mapping)).identity == identity


def test_stereochemistry_is_kept() -> None:
    smarts = "[#8:1]-[#6:2]-[#6:3]-[#6:4]"
    keys = {}
    for smiles in ("C[C@H](O)CC", "C[C@@H](O)CC"):
        molecule = Molecule.from_smiles(smiles)
        identity = canonicalize_torsion(molecule, match(molecule, smarts)).identity
        assert "@" in identity.mapped_smiles
        assert identity.to_molecule().is_isomorphic_with(molecule, atom_stereochemistry_matching=True)
        other, mapping = shuffled(molecule, seed=2)
        moved = remapped(match(molecule, smarts), mapping)
        assert canonicalize_torsion(other, moved).identity == identity
        keys[smiles] = identity.key
    assert keys["C[C@H](O)CC"] != keys["C[C@@H](O)CC"]


def test_undefined_stereochemistry_gets_its_own_stable_identity() -> None:
    """Fragments may lose a parent's stereocentre: they still get one identity and geometry."""
    molecule = Molecule.from_smiles("CC(F)CO", allow_undefined_stereo=True)
    smarts = "[#6:1]-[#6:2]-[#6:3]-[#8:4]"
    identity = canonicalize_torsion(molecule, match(molecule, smarts)).identity
    assert "@" not in identity.mapped_smiles
    other, mapping = shuffled(molecule, seed=5)
    assert canonicalize_torsion(other, remapped(match(molecule, smarts), mapping)).identity == identity
    first, second = (starting_geometries(identity, 1)[0] for _ in range(2))
    assert np.array_equal(first, second)
    defined = Molecule.from_smiles("C[C@H](F)CO")
    assert canonicalize_torsion(defined, match(defined, smarts)).identity != identity


def test_identity_model() -> None:
    identity = canonicalize_torsion(Molecule.from_smiles("CCCC"), (0, 1, 2, 3)).identity
    a, b, c, d = identity.dihedral
    assert identity.key == f"{identity.mapped_smiles}|{a}-{b}-{c}-{d}"
    assert identity.central_bond == (b, c)
    canonical = identity.to_molecule()
    assert canonical.atom(b).is_bonded_to(canonical.atom(c))
    assert TorsionIdentity.model_validate(identity.model_dump()) == identity
    with pytest.raises(ValidationError):
        identity.dihedral = (3, 2, 1, 0)
    torsion = canonicalize_torsion(Molecule.from_smiles("CCCC"), (0, 1, 2, 3))
    assert CanonicalTorsion.model_validate_json(torsion.model_dump_json()) == torsion


@pytest.mark.parametrize(
    ("smiles", "smarts"),
    [
        ("CCCC", "[#6:1]-[#6:2]-[#6:3]-[#6:4]"),
        ("C[C@H](O)CC(=O)[O-]", "[#8X2:1]-[#6:2]-[#6:3]-[#6:4]"),
    ],
)
def test_starting_geometries_are_deterministic(smiles: str, smarts: str) -> None:
    molecule = Molecule.from_smiles(smiles)
    dihedral = match(molecule, smarts)
    identity = canonicalize_torsion(molecule, dihedral).identity
    first = starting_geometries(identity, 4)
    second = starting_geometries(identity, 4)
    assert 1 <= len(first) <= 4
    assert [g.tobytes() for g in first] == [g.tobytes() for g in second]
    # the same identity reached from another atom order gives the same geometries
    other, mapping = shuffled(molecule, seed=9)
    again = canonicalize_torsion(other, remapped(dihedral, mapping))
    assert [g.tobytes() for g in starting_geometries(again.identity, 4)] == [g.tobytes() for g in first]

    canonical = identity.to_molecule()
    for geometry in first:
        assert geometry.shape == (canonical.n_atoms, 3)
        assert np.array_equal(np.round(geometry, 4), geometry)  # rounded to 1e-4 Å
        # atom order is canonical: every bond has a chemically sensible length in Å
        for bond in canonical.bonds:
            length = np.linalg.norm(geometry[bond.atom1_index] - geometry[bond.atom2_index])
            assert 0.9 < length < 1.7
        # and the stereochemistry of the identity is reproduced
        assert _smiles_from_3d(canonical, geometry) == Chem.MolToSmiles(canonical.to_rdkit())


def _smiles_from_3d(molecule: Molecule, geometry: np.ndarray) -> str:
    """Canonical RDKit SMILES of `molecule` with stereo perceived from `geometry` (Å)."""
    rdmol = molecule.to_rdkit()
    conformer = Chem.Conformer(molecule.n_atoms)
    for i, xyz in enumerate(geometry):
        conformer.SetAtomPosition(i, xyz.tolist())
    rdmol.AddConformer(conformer, assignId=True)
    Chem.AssignStereochemistryFrom3D(rdmol)
    return Chem.MolToSmiles(rdmol)


def test_starting_geometries_reject_zero_conformers() -> None:
    identity = canonicalize_torsion(Molecule.from_smiles("CCCC"), (0, 1, 2, 3)).identity
    with pytest.raises(ValueError, match="at least 1"):
        starting_geometries(identity, 0)
