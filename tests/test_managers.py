"""Local compute managers: one pinned worker per process, and clean hand-over on SIGTERM."""

from __future__ import annotations

import os
import signal
import time

import psutil
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
    deadline = time.monotonic() + 120
    while True:
        active = [
            m
            for m in admin_client.query_managers()
            if str(m.status.value) == "active" and m.name.startswith("bespoke-local-")
        ]
        if len(active) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(active) >= 2
    programs = set().union(*(m.programs for m in active))
    assert {"rdkit", "xtb", "geometric", "torsiondrive"} <= programs


def _running_optimizations(client) -> int:
    return sum(1 for _ in client.query_records(record_type="optimization", status="running"))


@pytest.mark.parametrize("how, smiles", [("sigterm", "CCCN"), ("sigkill", "CCCCl")])
def test_stopped_manager_hands_its_drive_to_another(
    how, smiles, stage, managers, admin_client, embedded_server
):
    """SIGTERM: the manager returns its tasks at once. SIGKILL of the manager and its task
    processes (a node dying): the server takes the tasks back after missed heartbeats."""
    molecule = Molecule.from_smiles(smiles)
    spec = get_preset("debug", grid_spacing=60)
    drive = stage.submit(molecule, [default_dihedral(molecule, (1, 2))], spec)[0]
    deadline = time.monotonic() + 120
    while _running_optimizations(admin_client) == 0:
        assert time.monotonic() < deadline, "no optimisation started"
        time.sleep(0.2)

    if how == "sigterm":
        assert managers.stop() == 2
        logs = "".join(p.read_text() for p in managers.directory.glob("manager-*.log"))
        assert "returned" in logs.lower()
        assert _running_optimizations(admin_client) == 0  # nothing left with the stopped managers
    else:
        pids = [process.pid for process in managers.status()]
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)], timeout=10)
    assert not any(p.running for p in managers.status())

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


@pytest.mark.parametrize(
    "bad",
    [{"n_workers": 0}, {"cores_per_worker": 0}, {"memory_per_worker": -1}, {"update_frequency": 0.5}],
)
def test_bad_manager_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        ManagerSettings(**bad)
