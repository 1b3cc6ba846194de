"""Restarting the embedded server keeps every record (runs after the other server tests)."""

from __future__ import annotations

from openff.toolkit import Molecule

from bespoke_fractal.qc import default_dihedral, get_preset


def test_restart_keeps_records(embedded_server, managers, stage, admin_client, record_count):
    molecule = Molecule.from_smiles("CCO")
    spec = get_preset("debug", grid_spacing=60)
    drive = stage.submit(molecule, [default_dihedral(molecule, (0, 1))], spec)[0]
    before = stage.wait([drive], timeout=900, progress=False)[0]
    assert before.ok, before.error
    count = record_count(admin_client)
    address = embedded_server.address

    managers.stop()
    embedded_server.stop()
    assert not embedded_server.status().running
    assert not embedded_server.status().postgres_running
    embedded_server.start()
    managers.start()

    assert embedded_server.address == address
    client = embedded_server.connection("submit").client()
    from bespoke_fractal.qc import TorsionDriveStage

    fresh = TorsionDriveStage(client)
    again = fresh.submit(molecule, [default_dihedral(molecule, (0, 1))], spec)[0]
    assert again.record_id == before.record_id and not again.new_entry
    after = fresh.results([again])[0]
    assert [p.energy_hartree for p in after.grid] == [p.energy_hartree for p in before.grid]
    assert record_count(embedded_server.connection("admin").client()) == count
