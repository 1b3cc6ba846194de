"""A QC drive that fails for good sinks only the torsions that need it.

The faults are real: the QC task process of one drive is killed (as the kernel's OOM killer
would) and the executor is told not to retry it.
"""

from __future__ import annotations

import time

import psutil
import pytest
from openff.toolkit import ForceField, Molecule
from qc_tasks import qc_tasks

from bespoke_fractal.executor import BespokeExecutor, wait_until_complete
from bespoke_fractal.workflow import BespokeWorkflowFactory


def kill_task(formula: str, timeout: float = 300) -> None:
    """SIGKILL the first running QC task process on a molecule of this formula."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in qc_tasks(formula):
            try:
                proc.kill()
                return
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no QC task on {formula} appeared")


@pytest.fixture
def executor(embedded_server, managers):
    with BespokeExecutor(
        n_qc_compute_workers=0, directory=embedded_server.directory, poll_interval=0.5, max_qc_resets=0
    ) as running:
        yield running


def test_failed_drive_leaves_its_torsion_unfitted_and_fits_the_rest(executor):
    # hexane: the C1-C2 torsion is driven on pentane (C5H12), C2-C3 on hexane itself (C6H14)
    factory = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 45})
    job_id = executor.submit("CCCCCC", factory)
    kill_task("C6H14")
    output = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert output.status == "success", output.error
    assert "1 of 2 torsion drive(s) failed" in output.stages[1].note
    [unfitted] = output.results.unfitted
    assert "failed" in unfitted.reason and unfitted.target_index == 1
    [fitted] = output.results.torsions
    assert fitted.target_index == 0 and fitted.relaxed_after.rmse < fitted.relaxed_before.rmse

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
    job_id = executor.submit("C[C@@H](F)CC", factory)  # one target bond, driven on C4H9F
    deadline = time.monotonic() + 600
    while not (record_ids := executor.retrieve(job_id).qc.record_ids):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    while True:
        drive = admin_client.get_torsiondrives(record_ids[0])
        done = {key for key, opts in drive.optimizations.items() if any(o.status == "complete" for o in opts)}
        if len(done) >= 10:
            break
        assert drive.status != "complete", "the drive finished before the fault"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    kill_task("C4H9F")  # its fragment (2-fluorobutane), not anything else running here
    output = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert output.status == "success", output.error
    assert "fitting the 1 usable drive(s)" in output.stages[1].note
    assert not output.results.unfitted
    assert admin_client.get_torsiondrives(record_ids[0]).status == "error"  # the drive did fail
    [torsion] = output.results.torsions
    assert 9 <= len(torsion.angles) <= 12  # the killed task may have been a point's second try
    assert torsion.relaxed_after.rmse < torsion.relaxed_before.rmse
