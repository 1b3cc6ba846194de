"""A QC drive that fails for good sinks only the torsions that need it.

The faults are real: the QC task process of one drive is killed (as the kernel's OOM killer
would) and the executor is told not to retry it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
from openff.toolkit import ForceField, Molecule

from bespoke_fractal.executor import BespokeExecutor, wait_until_complete
from bespoke_fractal.workflow import BespokeWorkflowFactory


def task_atoms(proc: psutil.Process) -> int | None:
    """Atoms in the molecule of a running qcengine task (from its input file), or None."""
    try:
        cmdline = proc.cmdline()
        script = next(i for i, part in enumerate(cmdline) if part.endswith("qcengine_compute.py"))
        data = json.loads(Path(cmdline[script + 1]).read_text())
        molecule = data["input_data"]["initial_molecule"]
        return len(molecule["symbols"])
    except (StopIteration, IndexError, OSError, ValueError, KeyError, psutil.Error):
        return None


def kill_task(n_atoms: int, timeout: float = 300, stop=lambda: False) -> bool:
    """SIGKILL the first QC task process that works on a molecule of ``n_atoms`` atoms; False
    when ``stop()`` became true first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter():
            if task_atoms(proc) == n_atoms:
                proc.kill()
                return True
        if stop():
            return False
        time.sleep(0.05)
    raise AssertionError(f"no QC task on a {n_atoms}-atom molecule appeared")


@pytest.fixture
def executor(embedded_server, managers):
    with BespokeExecutor(
        n_qc_compute_workers=0, directory=embedded_server.directory, poll_interval=0.5, max_qc_resets=0
    ) as running:
        yield running


def test_failed_drive_leaves_its_torsion_unfitted_and_fits_the_rest(executor):
    # hexane: the C1-C2 torsion is driven on pentane (17 atoms), C2-C3 on hexane itself (20)
    factory = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 45})
    job_id = executor.submit("CCCCCC", factory)
    kill_task(20)
    output = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert output.status == "success", output.error
    assert "1 of 2 torsion drive(s) failed" in output.stages[1].note
    [unfitted] = output.results.unfitted
    assert "failed" in unfitted.reason and unfitted.target_index == 1
    [fitted] = output.results.torsions
    assert fitted.target_index == 0 and fitted.fragment_after.rmse < fitted.fragment_before.rmse

    force_field = ForceField(output.offxml)
    molecule = Molecule.from_mapped_smiles(output.smiles)
    labels = force_field.label_molecules(molecule.to_topology())[0]["ProperTorsions"]
    ids_on = {
        bond: {p.id for key, p in labels.items() if {key[1], key[2]} == set(bond)}
        for bond in ((1, 2), (2, 3))
    }
    assert ids_on[(2, 3)] and not any(pid.startswith("bf-") for pid in ids_on[(2, 3)])  # initial ones
    assert all(pid.startswith("bf-") for pid in ids_on[(1, 2)])


def test_drive_that_failed_late_is_still_fitted(executor, admin_client):
    """One grid point lost must not sink the molecule: 9 of 12 points are enough to fit."""
    factory = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 30})
    job_id = executor.submit("C[C@@H](F)CC", factory)  # 14 atoms, one target bond
    deadline = time.monotonic() + 600
    while not (record_ids := executor.retrieve(job_id).qc.record_ids):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    while True:
        drive = admin_client.get_torsiondrives(record_ids[0])
        done = {key for key, opts in drive.optimizations.items() if any(o.status == "complete" for o in opts)}
        if len(done) >= 9:
            break
        assert drive.status != "complete", "the drive finished before the fault"
        assert time.monotonic() < deadline
        time.sleep(0.2)

    def drive_status() -> str:
        return admin_client.get_torsiondrives(record_ids[0]).status

    # a task killed just as it finished still returns its result: kill until one really fails
    while drive_status() not in ("error", "complete"):
        kill_task(14, stop=lambda: drive_status() in ("error", "complete"))
        time.sleep(0.5)
    assert drive_status() == "error", "the drive finished before the fault"
    output = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert output.status == "success", output.error
    assert "fitting the 1 usable drive(s)" in output.stages[1].note
    assert not output.results.unfitted
    assert admin_client.get_torsiondrives(record_ids[0]).status == "error"  # the drive did fail
    [torsion] = output.results.torsions
    assert 9 <= len(torsion.angles) <= 12  # the killed task may have been a point's second try
    assert torsion.fragment_after.rmse < torsion.fragment_before.rmse
