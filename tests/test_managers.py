"""Local compute managers: one pinned worker per process, and clean hand-over on SIGTERM."""

from __future__ import annotations

import os
import time

import pytest
from openff.toolkit import Molecule

from bespoke_fractal.manager import LocalManagers, ManagerSettings
from bespoke_fractal.qc import default_dihedral, get_preset


def test_workers_pinned_to_own_cores_with_thread_limits(managers):
    processes = managers.status()
    assert len(processes) == 2 and all(p.running for p in processes)
    if len(os.sched_getaffinity(0)) >= 2:
        first, second = (set(p.cores) for p in processes)
        assert first and second and not first & second
    for p in processes:
        environ = dict(
            item.split("=", 1) for item in open(f"/proc/{p.pid}/environ").read().split("\0") if "=" in item
        )
        assert environ["OMP_NUM_THREADS"] == "1"
        assert environ["PATH"].split(os.pathsep)[0].endswith("/bin")


def test_managers_registered_with_the_server(managers, admin_client):
    active = [m for m in admin_client.query_managers() if str(m.status.value) == "active"]
    names = {m.name.split("-vm")[0].rsplit("-", 1)[0] for m in active}
    assert any(name.startswith("bespoke-local") for name in names)
    programs = set().union(*(m.programs for m in active))
    assert {"rdkit", "xtb", "geometric", "torsiondrive"} <= programs


def _running_optimizations(client) -> int:
    return sum(1 for _ in client.query_records(record_type="optimization", status="running"))


def test_sigterm_returns_tasks_and_another_manager_finishes(stage, managers, admin_client, embedded_server):
    molecule = Molecule.from_smiles("CCCN")
    spec = get_preset("debug", grid_spacing=60)
    drive = stage.submit(molecule, [default_dihedral(molecule, (1, 2))], spec)[0]
    deadline = time.monotonic() + 120
    while _running_optimizations(admin_client) == 0:
        assert time.monotonic() < deadline, "no optimisation started"
        time.sleep(0.2)

    assert managers.stop() == 2
    assert not any(p.running for p in managers.status())
    logs = "".join(p.read_text() for p in managers.directory.glob("manager-*.log"))
    assert "returned" in logs.lower()
    assert _running_optimizations(admin_client) == 0  # nothing left assigned to the dead managers

    other = LocalManagers(
        embedded_server.directory / "other-managers",
        embedded_server.connection("compute"),
        ManagerSettings(n_workers=1, cluster="bespoke-other"),
    )
    other.start()
    try:
        result = stage.wait([drive], timeout=900, progress=False)[0]
    finally:
        other.stop()
        managers.start()
    assert result.ok, result.error
    finishers = {
        o.manager_name for o in admin_client.get_optimizations([p.optimization_id for p in result.grid])
    }
    assert any(name and name.startswith("bespoke-other") for name in finishers)


@pytest.mark.parametrize("bad", [{"n_workers": 0}, {"cores_per_worker": 0}, {"memory_per_worker": -1}])
def test_bad_manager_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        ManagerSettings(**bad)
