"""The fragmentation stage on real molecules with openff-fragmenter and AmberTools AM1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from openff.toolkit import Molecule
from rdkit import Chem
from rdkit.Chem import AllChem

from bespoke_fractal.errors import MoleculeInputError, NothingToFitError
from bespoke_fractal.fragmentation import AM1BondOrderCache, fragment_molecule
from bespoke_fractal.molecules import load_molecules
from bespoke_fractal.schema.identity import canonicalize_torsion, default_dihedral
from bespoke_fractal.workflow import BespokeWorkflowFactory, build_schemas, unique_drives

IBUPROFEN = "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O"
STEREOCENTRE = 10  # ibuprofen's [C@H], by index in IBUPROFEN
PHENYLPROPANOIC_ACID = "C[C@H](C(=O)O)c1ccccc1"  # ibuprofen's fragment around its acid side chain

# The fast tier (pytest -m fast) has the tests of small molecules and of Pfizer fragments: AM1
# bond orders of ibuprofen, biphenyl and larger molecules take tens of seconds each, and one
# test submits to the session's QCFractal server. test_am1_cache_is_reused_across_runs reads
# what test_butane computed.


@pytest.fixture(scope="module")
def factory() -> BespokeWorkflowFactory:
    return BespokeWorkflowFactory.from_preset("debug")


@pytest.fixture(scope="module")
def schema_of(factory, am1_cache_directory):
    """Job description of a SMILES, built once per module with the session's AM1 cache."""
    built = {}

    def build(smiles: str):
        if smiles not in built:
            built[smiles] = factory.optimization_schema_from_molecule(
                smiles, AM1BondOrderCache(am1_cache_directory)
            )
        return built[smiles]

    return build


def _check_maps(schema) -> None:
    """Every fragment atom mapped to the parent is the same element with the same charge, and
    each target's fragment contains the parent bond it stands for."""
    parent = schema.parent_molecule()
    for target in schema.targets:
        fragment = schema.fragmentation.fragments[target.fragment]
        piece = fragment.to_molecule()
        for f_index, p_index in fragment.parent_atoms.items():
            assert piece.atoms[f_index].atomic_number == parent.atoms[p_index].atomic_number
            assert piece.atoms[f_index].formal_charge == parent.atoms[p_index].formal_charge
        b, c = target.fragment_dihedral[1:3]
        assert sorted((fragment.parent_atoms[b], fragment.parent_atoms[c])) == list(target.parent_bond)
        assert target.identity == canonicalize_torsion(piece, target.fragment_dihedral).identity


@pytest.mark.fast
def test_butane(schema_of) -> None:
    schema = schema_of("CCCC")
    (target,) = schema.targets
    assert target.parent_bonds == [(1, 2)]
    butane = Molecule.from_smiles("CCCC")
    assert target.identity == canonicalize_torsion(butane, default_dihedral(butane, (1, 2))).identity
    assert target.parent_dihedral is not None
    assert schema.fragmentation.fragmenter == "WBO"
    _check_maps(schema)


@pytest.mark.fast
def test_ethanol_has_nothing_to_fit_by_default_but_a_smarts_selects_its_hydroxyl(factory, schema_of) -> None:
    with pytest.raises(NothingToFitError, match="nothing to fit"):
        schema_of("CCO")
    hydroxyl = factory.with_changes({"target_torsion_smirks": ["[#6:1]-[#8:2]"]})
    schema = hydroxyl.optimization_schema_from_molecule("CCO")
    (target,) = schema.targets
    assert target.parent_bonds == [(1, 2)]
    assert [schema.parent_molecule().atoms[i].symbol for i in target.parent_dihedral] == ["C", "C", "O", "H"]


def test_biphenyl_keeps_both_rings(schema_of) -> None:
    schema = schema_of("c1ccc(cc1)-c1ccccc1")
    (target,) = schema.targets
    (fragment,) = schema.fragmentation.fragments
    assert len(fragment.parent_atoms) == 22  # the whole molecule: the biaryl WBO needs both rings
    _check_maps(schema)


def test_ibuprofen_four_torsions_on_four_wbo_fragments(schema_of) -> None:
    schema = schema_of(IBUPROFEN)
    assert len(schema.targets) == 4
    assert len(schema.fragmentation.fragments) == 4
    parent = schema.parent_molecule()
    for fragment in schema.fragmentation.fragments:
        assert len(fragment.parent_atoms) < parent.n_atoms  # each fragment is smaller than the parent
        piece = fragment.to_molecule()
        # the stereocentre survives in every fragment that contains it
        if STEREOCENTRE in fragment.parent_atoms.values():
            assert "@" in piece.to_smiles()
    assert len(schema.fragmentation.unique_identities) == 4
    assert schema.fragmentation.seconds > 0
    _check_maps(schema)


def test_charged_molecule_keeps_its_charge(schema_of) -> None:
    schema = schema_of("CCCC(=O)[O-]")
    assert len(schema.targets) == 2
    for fragment in schema.fragmentation.fragments:
        charge = sum(atom.formal_charge.m for atom in fragment.to_molecule().atoms)
        assert charge == -1
    _check_maps(schema)


def test_symmetry_equivalent_bonds_are_driven_once(schema_of) -> None:
    schema = schema_of("CCc1ccc(CC)cc1")  # 1,4-diethylbenzene: two equivalent ring-CH2 bonds
    (target,) = schema.targets
    assert len(target.parent_bonds) == 2
    assert len(schema.fragmentation.unique_identities) == 1


def test_two_atom_orders_give_the_same_fragment_torsions(factory, schema_of, am1_cache_directory) -> None:
    first = schema_of(IBUPROFEN)
    molecule = Molecule.from_smiles(IBUPROFEN)
    order = np.random.default_rng(3).permutation(molecule.n_atoms)
    shuffled = molecule.remap({int(old): new for new, old in enumerate(order)}, current_to_new=True)
    second = factory.optimization_schema_from_molecule(shuffled, AM1BondOrderCache(am1_cache_directory))
    assert second.fragmentation.am1_computed == 0  # the cache knows the molecule in any order
    assert {t.identity.key for t in first.targets} == {t.identity.key for t in second.targets}
    assert second.smiles != first.smiles  # the job keeps the user's atom order


def test_batch_sharing_a_fragment_needs_each_drive_once(factory, am1_cache_directory) -> None:
    outcomes = build_schemas(factory, [IBUPROFEN, PHENYLPROPANOIC_ACID], 2, am1_cache_directory)
    ibuprofen, acid = (o.schema_ for o in outcomes)
    assert {t.identity.key for t in acid.targets} <= {t.identity.key for t in ibuprofen.targets}
    assert len(unique_drives([ibuprofen, acid])) == 4


def test_shared_fragment_torsion_is_one_qc_drive(
    factory, am1_cache_directory, embedded_server, admin_client
) -> None:
    from bespoke_fractal.qc import TorsionDriveStage, get_preset

    stage = TorsionDriveStage(embedded_server.connection("submit").client())
    spec = get_preset("debug", grid_spacing=90)
    records = {}
    try:
        for smiles in (IBUPROFEN, PHENYLPROPANOIC_ACID):
            schema = factory.optimization_schema_from_molecule(smiles, AM1BondOrderCache(am1_cache_directory))
            for target in schema.targets:
                piece = schema.fragmentation.fragments[target.fragment].to_molecule()
                (drive,) = stage.submit(piece, [target.fragment_dihedral], spec)
                records.setdefault(target.identity.key, set()).add(drive.record_id)
    finally:
        # only the record ids matter here: leave the session's managers free for other tests
        ids = sorted({i for found in records.values() for i in found})
        if ids:
            admin_client.cancel_records(ids)
    assert len(records) == 4
    assert all(len(ids) == 1 for ids in records.values())


@pytest.mark.fast
def test_pfizer_fragmenter_needs_no_am1(factory) -> None:
    pfizer = factory.with_changes({"fragmentation_engine": "Pfizer"})
    cache = AM1BondOrderCache()
    schema = pfizer.optimization_schema_from_molecule(IBUPROFEN, cache)
    assert schema.fragmentation.fragmenter == "Pfizer"
    assert len(schema.targets) == 4
    assert cache.stats.computed == 0
    _check_maps(schema)


@pytest.mark.fast
def test_am1_cache_is_reused_across_runs(am1_cache_directory) -> None:
    molecule = Molecule.from_smiles("CCCC")
    fresh = AM1BondOrderCache(am1_cache_directory)
    from bespoke_fractal.fragmentation import WBOFragmentation

    result = fragment_molecule(molecule, ["[!#1]~[*:1]-[*:2]~[!#1]"], WBOFragmentation(), fresh)
    assert result.am1_computed == 0 and result.am1_reused >= 1
    entries = [json.loads(p.read_text()) for p in am1_cache_directory.glob("*.json")]
    butane = [e for e in entries if e["smiles"] == Chem.MolToSmiles(molecule.to_rdkit())]
    assert len(butane) == 1
    orders = {(i, j): value for i, j, value in butane[0]["bond_orders"]}
    assert len(orders) == molecule.n_bonds
    carbon_carbon = [v for v in orders.values() if 0.95 < v < 1.1]
    assert len(carbon_carbon) >= 3  # AM1 Wiberg orders of C-C and C-H single bonds are near 1


# ---- molecules and bad input ------------------------------------------------------------


def _write_sdf(path, named_smiles) -> None:
    writer = Chem.SDWriter(str(path))
    for name, smiles in named_smiles:
        rdmol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(rdmol, randomSeed=7)
        rdmol.SetProp("_Name", name)
        writer.write(rdmol)
    writer.close()


def _write_mol2(path, smiles: str, name: str) -> None:
    """A minimal Tripos MOL2 of an sp3 molecule (C.3, O.3, H), as other programs write it."""
    rdmol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(rdmol, randomSeed=7)
    xyz = rdmol.GetConformer().GetPositions()
    counts = f"{rdmol.GetNumAtoms()} {rdmol.GetNumBonds()} 0 0 0"
    lines = ["@<TRIPOS>MOLECULE", name, counts, "SMALL", "NO_CHARGES", "", "@<TRIPOS>ATOM"]
    for atom, (x, y, z) in zip(rdmol.GetAtoms(), xyz, strict=True):
        symbol, number = atom.GetSymbol(), atom.GetIdx() + 1
        kind = symbol + (".3" if symbol != "H" else "")
        lines.append(f"{number} {symbol}{number} {x:.4f} {y:.4f} {z:.4f} {kind} 1 MOL 0.0")
    lines.append("@<TRIPOS>BOND")
    for i, bond in enumerate(rdmol.GetBonds(), start=1):
        lines.append(f"{i} {bond.GetBeginAtomIdx() + 1} {bond.GetEndAtomIdx() + 1} 1")
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.fast
def test_molecule_files(tmp_path) -> None:
    sdf = tmp_path / "two.sdf"
    _write_sdf(sdf, [("butane", "CCCC"), ("propanol", "CCCO")])
    mol2 = tmp_path / "pentane.mol2"
    _write_mol2(mol2, "CCCCC", "pentane")
    batch = load_molecules([sdf, mol2, "CCCC", Molecule.from_smiles("CCCCO")])
    assert [item.ok for item in batch] == [True] * 5
    assert batch[0].name == "two.sdf#1 (butane)" and batch[2].name == "pentane.mol2#1 (pentane)"
    assert batch[1].molecule.is_isomorphic_with(Molecule.from_smiles("CCCO"))
    assert batch[2].molecule.is_isomorphic_with(Molecule.from_smiles("CCCCC"))


@pytest.mark.fast
def test_bad_molecules_get_one_line_and_leave_the_batch_running(factory, tmp_path, am1_cache_directory):
    not_molecules = tmp_path / "notes.txt"
    not_molecules.write_text("hello\n")
    empty_sdf = tmp_path / "empty.sdf"
    empty_sdf.write_text("nothing here\n")
    bad = {
        "C1CC(": "cannot read SMILES",
        str(tmp_path / "missing.sdf"): "no such file",
        str(not_molecules): "not a molecule file",
        str(empty_sdf): "no molecule records",
        "[CH3]": "radical",
        "CC(F)(Cl)Br": "undefined stereochemistry at atom C1",
        "CCB(O)O": "cannot handle element B",
        "CCO": "nothing to fit",
    }
    outcomes = build_schemas(factory, [*bad, "CCCC"], 2, am1_cache_directory)
    assert outcomes[-1].ok
    for outcome, message in zip(outcomes[:-1], bad.values(), strict=True):
        assert not outcome.ok
        assert message in outcome.error, outcome.error
        assert "\n" not in outcome.error


@pytest.mark.fast
def test_force_field_without_parameters_is_reported(factory) -> None:
    xtb = factory.with_changes({"qc_spec": "xtb"})
    with pytest.raises(MoleculeInputError, match="has no vdW parameter for B"):
        xtb.optimization_schema_from_molecule("CCB(O)O")


@pytest.mark.fast
def test_undefined_stereo_can_be_enumerated() -> None:
    batch = load_molecules("CC(F)(Cl)Br", enumerate_stereo=True)
    assert len(batch) == 2 and all(item.ok for item in batch)
    assert batch[0].molecule.to_smiles() != batch[1].molecule.to_smiles()
