"""The QC stage against a real QCFractal server and real compute managers (rdkit MMFF94)."""

from __future__ import annotations

import numpy as np
import pytest
from openff.toolkit import Molecule

from bespoke_fractal.qc import default_dihedral, get_preset
from bespoke_fractal.qc.programs import rdkit_energy_kcal
from bespoke_fractal.schema.units import KCAL_PER_HARTREE

SPEC = get_preset("rdkit-mmff94", grid_spacing=60)


def _butane(smiles: str = "CCCC", seed: int | None = None) -> Molecule:
    molecule = Molecule.from_smiles(smiles)
    if seed is not None:
        from rdkit.Chem import AllChem

        rdmol = molecule.to_rdkit()
        AllChem.EmbedMolecule(rdmol, randomSeed=seed)
        molecule = Molecule.from_rdkit(rdmol)
    return molecule


def _central_dihedral(molecule: Molecule) -> tuple[int, int, int, int]:
    carbons = [a.molecule_atom_index for a in molecule.atoms if a.atomic_number == 6]
    inner = [i for i in carbons if sum(n.atomic_number == 6 for n in molecule.atom(i).bonded_atoms) == 2]
    return default_dihedral(molecule, (inner[0], inner[1]))


@pytest.fixture(scope="module")
def butane_result(stage):
    molecule = _butane()
    return molecule, stage.run(molecule, [_central_dihedral(molecule)], SPEC, timeout=900)[0]


def _check_profile_against_rdkit(molecule: Molecule, result) -> None:
    assert result.ok, result.error
    assert [p.angle for p in result.grid] == [-120, -60, 0, 60, 120, 180]
    for point in result.grid:
        direct = rdkit_energy_kcal(molecule, np.array(point.geometry_angstrom), "mmff94")
        assert point.energy_kcal_mol == pytest.approx(direct, abs=1e-3)
        assert point.energy_hartree * KCAL_PER_HARTREE == pytest.approx(point.energy_kcal_mol)


def test_butane_drive_energies_are_rdkit_mmff94(butane_result):
    molecule, result = butane_result
    _check_profile_against_rdkit(molecule, result)
    relative = {p.angle: p.relative_energy_kcal_mol for p in result.grid}
    # MMFF94 butane: anti minimum, syn barrier ~5 kcal/mol (the 4.184x harness bug would give ~1.2)
    assert min(relative, key=relative.get) == 180
    assert 4.0 < relative[0] < 7.0
    # the driven dihedral really sits at each grid angle in the returned geometry
    for point in result.grid:
        measured = _dihedral_degrees(np.array(point.geometry_angstrom), result.driven_dihedral)
        assert abs((measured - point.angle + 180) % 360 - 180) < 1.0


def test_ethanol_drive_energies_are_rdkit_mmff94(stage):
    molecule = Molecule.from_smiles("CCO")
    result = stage.run(molecule, [default_dihedral(molecule, (0, 1))], SPEC, timeout=900)[0]
    _check_profile_against_rdkit(molecule, result)


def _dihedral_degrees(xyz: np.ndarray, dihedral) -> float:
    p0, p1, p2, p3 = (xyz[i] for i in dihedral)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def test_same_torsion_is_never_recomputed(stage, admin_client, butane_result, record_count):
    _, first = butane_result
    before = record_count(admin_client)
    # another atom order, another input conformer, the reversed dihedral
    for smiles, seed, reverse in (("C(C)CC", 7, False), ("CCCC", 123, True)):
        molecule = _butane(smiles, seed)
        dihedral = _central_dihedral(molecule)
        if reverse:
            dihedral = tuple(reversed(dihedral))
        drive = stage.submit(molecule, [dihedral], SPEC)[0]
        assert drive.record_id == first.record_id
        assert not drive.new_entry
        again = stage.results([drive])[0]
        assert again.ok
        # same profile, returned in this input's atom order
        assert [p.energy_hartree for p in again.grid] == [p.energy_hartree for p in first.grid]
        _check_profile_against_rdkit(molecule, again)
    assert record_count(admin_client) == before


def test_different_torsion_or_spec_creates_a_record(stage, admin_client, butane_result):
    molecule, first = butane_result
    before = {record.id for record in admin_client.query_records(record_type="torsiondrive")}
    terminal = default_dihedral(molecule, (0, 1))
    other_bond = stage.submit(molecule, [terminal], SPEC)[0]
    other_spec = stage.submit(molecule, [_central_dihedral(molecule)], get_preset("debug", grid_spacing=90))[
        0
    ]
    assert len({first.record_id, other_bond.record_id, other_spec.record_id}) == 3
    assert other_spec.dataset_name != first.dataset_name
    after = {record.id for record in admin_client.query_records(record_type="torsiondrive")}
    assert other_bond.record_id not in before  # this spec and bond are driven by no other test
    # nothing else was created; the debug drive of butane may exist already (crash-recovery tests)
    assert after - before == {other_bond.record_id, other_spec.record_id} - before
    results = stage.wait([other_bond, other_spec], timeout=900, progress=False)
    assert all(r.ok for r in results), [r.error for r in results]


def test_errored_drive_is_reported_and_good_drive_completes(stage):
    bad_spec = get_preset("debug", grid_spacing=90, method="no-such-forcefield")
    good_spec = get_preset("debug", grid_spacing=90)
    # Ethane: propanol's hydroxyl rotor sometimes sends geomeTRIC into 300 slow non-converging steps.
    molecule = Molecule.from_smiles("CC")
    dihedral = default_dihedral(molecule, (0, 1))
    drives = stage.submit(molecule, [dihedral], bad_spec) + stage.submit(molecule, [dihedral], good_spec)
    bad, good = stage.wait(drives, timeout=900, max_resets=1, progress=False)
    assert good.ok, good.error
    assert bad.status == "error"
    assert bad.error and "\n" not in bad.error
    assert "no-such-forcefield" in bad.error.lower() or "method" in bad.error.lower()
    assert not bad.grid


def test_another_user_reuses_the_record(embedded_server, admin_client, butane_result, record_count):
    """A second submit account on the same server finds the first account's drive."""
    import secrets

    from qcportal.auth import UserInfo

    from bespoke_fractal.qc import TorsionDriveStage
    from bespoke_fractal.server import ServerConnection

    password = secrets.token_urlsafe(24)
    admin_client.add_user(UserInfo(username="second-chemist", role="submit", enabled=True), password)
    other = TorsionDriveStage(
        ServerConnection(
            address=embedded_server.address, username="second-chemist", password=password
        ).client()
    )
    _, first = butane_result
    before = record_count(admin_client)
    molecule = _butane("C(CC)C", seed=99)
    drive = other.submit(molecule, [_central_dihedral(molecule)], SPEC)[0]
    assert drive.record_id == first.record_id and not drive.new_entry
    assert other.results([drive])[0].ok
    assert record_count(admin_client) == before
