"""Cost preview: a molecule with half of its drives cached, counted against the real server."""

from __future__ import annotations

import json

import pytest
from helpers import WIDE, run_cli

from bespoke_fractal.executor import BespokeExecutor, JobStore, submit_plan
from bespoke_fractal.qc.plan import drive_statuses
from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

# methyl propyl ether: two rotatable bonds (C-C and C-O), two distinct drives, one fragment
HALF_CACHED = "CCCOC"
# shares no drive with it
OTHER = "CCCCO"


@pytest.fixture(scope="module")
def factory() -> BespokeWorkflowFactory:
    return BespokeWorkflowFactory.from_preset("debug").with_changes({"qc_spec.grid_spacing": 90})


@pytest.fixture(scope="module")
def half_cached(embedded_server, stage, factory, tmp_path_factory):
    """The plan before anything is computed, the drive computed, and the executor planning."""
    executor = BespokeExecutor(directory=embedded_server.directory, n_qc_compute_workers=0)
    before = executor.plan([HALF_CACHED], factory)
    schema = before.outcomes[0].schema_
    first = schema.targets[0]
    fragment = schema.fragmentation.fragments[first.fragment].to_molecule()
    drives = stage.submit(fragment, [first.fragment_dihedral], factory.qc_spec)
    [result] = stage.wait(drives, timeout=600, progress=False)
    assert result.ok, result.error
    return executor, before, first.identity.key, drives[0].record_id


def test_plan_counts_half_cached_molecule_against_the_server(
    half_cached, embedded_server, factory, admin_client, record_count
):
    executor, before, cached_key, cached_id = half_cached
    spec = factory.qc_spec
    assert before.total.unique == 2 and before.total.targets == 2
    # nothing of this molecule was on the server before
    assert before.total.complete == 0 and before.total.to_compute == 2

    records_before = record_count(admin_client)
    plan = executor.plan([HALF_CACHED, OTHER], factory)
    assert record_count(admin_client) == records_before, "planning created records"

    molecule = plan.molecules[0]
    assert molecule.drives.targets == 2 and molecule.drives.unique == 2
    assert molecule.drives.complete == 1 and molecule.drives.to_compute == 1
    assert cached_key in molecule.drive_keys
    # the counts agree with the server's own records
    dataset = admin_client.get_dataset("torsiondrive", spec.dataset_name)
    records = {
        entry: record for entry, _s, record in dataset.iterate_records(specification_names=[spec.label])
    }
    assert records[cached_key].id == cached_id and str(records[cached_key].status.value) == "complete"
    uncached = [key for key in molecule.drive_keys if key != cached_key]
    assert all(key not in records for key in uncached)
    assert drive_statuses(admin_client, spec, molecule.drive_keys) == {
        cached_key: "complete",
        uncached[0]: None,
    }

    # the cost of what remains: the other molecule's two drives and one of this one's
    assert plan.total.unique == 4 and plan.total.complete == 1 and plan.total.to_compute == 3
    assert plan.cost_model.measured_drives >= 1, plan.cost_model.source
    per_drive = plan.cost_model.drive_core_hours(spec)
    assert molecule.estimated_core_hours == pytest.approx(per_drive)
    assert plan.estimated_core_hours == pytest.approx(3 * per_drive)
    assert "1 of 4 drives already cached" in plan.summary()


def test_plan_cli_json_matches_and_submits_nothing(half_cached, embedded_server, admin_client, record_count):
    _executor, _before, cached_key, _id = half_cached
    records_before = record_count(admin_client)
    result = run_cli(
        "executor", "plan", "--directory", str(embedded_server.directory), "--smiles", HALF_CACHED,
        "--workflow", "debug", "--set", "qc_spec.grid_spacing=90", "--json",
        env=WIDE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["server_checked"] and plan["total"]["complete"] == 1 and plan["total"]["to_compute"] == 1
    assert cached_key in plan["molecules"][0]["drive_keys"]
    assert record_count(admin_client) == records_before


def test_plan_without_a_server_and_a_molecule_without_drives(tmp_path, factory):
    executor = BespokeExecutor(directory=tmp_path / "nothing-here", n_qc_compute_workers=0)
    plan = executor.plan(["CCCOC", "C"], factory)
    assert not plan.server_checked and "cache not checked" in plan.summary()
    assert plan.molecules[0].drives.to_compute == 2
    assert plan.molecules[1].error and "nothing to fit" in plan.molecules[1].error
    assert not (tmp_path / "nothing-here" / "server").exists()


def test_batch_submission_shows_the_plan_and_queues_fragmented_jobs(tmp_path, factory, half_cached):
    """`executor submit` prints the plan to stderr and queues the plan's job descriptions, so
    the coordinator does not fragment them again; a molecule without drives is still a job."""
    directory = tmp_path / "queue"
    result = run_cli(
        "executor", "submit", "--directory", str(directory), "--smiles", HALF_CACHED, "--smiles", "C",
        "--workflow", "debug", "--set", "qc_spec.grid_spacing=90",
        env=WIDE,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 torsion drive(s) for 2 target torsion(s); cache not checked" in result.stderr
    job_lines = [line for line in result.stdout.splitlines() if line.startswith("job ")]
    assert len(job_lines) == 2
    store = JobStore.in_directory(directory)
    first, second = (store.output(line.split()[1].rstrip(":")) for line in job_lines)
    assert first.stages[0].status == "success" and "fragmented at submission" in first.stages[0].note
    assert first.stages[0].attempts == 1
    assert second.stages[0].status == "waiting"  # fragmented (and failed) again by the coordinator

    # the API: a plan against the server, queued as it is
    executor, *_ = half_cached
    plan = executor.plan([HALF_CACHED], factory)
    (tmp_path / "api-queue").mkdir()
    other = JobStore.in_directory(tmp_path / "api-queue")
    [job_id] = submit_plan(other, plan)
    assert other.output(job_id).stages[0].status == "success"
