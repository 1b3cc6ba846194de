"""The bespoke executor end to end: real QCFractal server and managers, real ForceBalance.

The Python API runs a batch on the session's server; the CLI launches its own embedded server
in a fresh directory, is driven from other processes, and is killed with SIGKILL mid-QC.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest
from helpers import EXE, run_cli, torsiondrive_ids
from openff.toolkit import ForceField, Molecule

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig, JobStore, wait_until_complete
from bespoke_fractal.executor.output import FORCE_FIELD_NAME, RESULT_NAME, RMSE_NAME
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.session import embedded_managers
from bespoke_fractal.workflow import BespokeWorkflowFactory

# MMFF94 drives at 60 degrees: real profiles, fast enough for a test
FACTORY = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 60})
DEBUG_60 = ["--workflow", "debug", "--set", "qc_spec.grid_spacing=60"]
# `bespoke-fractal executor ARGS`; `watch` waits for a whole job
cli = partial(run_cli, "executor", timeout=1500)


def check_force_field(offxml: str, smiles: str, parameter_ids: list[str]) -> None:
    """The force field loads, and its bespoke torsions apply to the parent, on the target bonds."""
    force_field = ForceField(offxml)
    molecule = Molecule.from_mapped_smiles(smiles)
    labels = force_field.label_molecules(molecule.to_topology())[0]["ProperTorsions"]
    bespoke = {p.id for p in labels.values() if p.id.startswith("bf-")}
    assert bespoke and bespoke <= set(parameter_ids)


# -- the Python API -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api_jobs(embedded_server, managers, admin_client):
    """Pentane and hexane (one fragment torsion in common) and ethane (nothing to fit),
    submitted together to an executor on the session's embedded server and its managers."""
    before = torsiondrive_ids(admin_client)  # earlier tests of the session may have driven some
    executor = BespokeExecutor(
        n_fragmenter_workers=2,
        fragmenter_worker_config=BespokeWorkerConfig(n_cores=1),
        n_qc_compute_workers=0,  # the session's managers serve this server
        n_optimizer_workers=2,  # the two fits run side by side
        optimizer_worker_config=BespokeWorkerConfig(n_cores=1),
        directory=embedded_server.directory,
        poll_interval=1.0,
    )
    with executor:
        ids = {smiles: executor.submit(smiles, FACTORY) for smiles in ("CCCCC", "CCCCCC", "CC")}
        with pytest.raises(BespokeFractalError) as bad:
            executor.submit("C1CC(", FACTORY)
        outputs = {
            smiles: wait_until_complete(job_id, frequency=1, timeout=1400) for smiles, job_id in ids.items()
        }
        listed = executor.list()
    return {
        "outputs": outputs,
        "bad_submission": str(bad.value),
        "new_drives": torsiondrive_ids(admin_client) - before,
        "drives_before": before,
        "listed": listed,
        "directory": embedded_server.directory,
    }


def test_api_job_gives_a_fitted_force_field(api_jobs):
    for smiles in ("CCCCC", "CCCCCC"):
        output = api_jobs["outputs"][smiles]
        assert output.status == "success", output.error
        assert [s.status for s in output.stages] == ["success"] * 3
        assert all(s.started_at and s.finished_at and s.attempts == 1 for s in output.stages)
        assert output.results.converged
        for torsion in output.results.torsions:
            assert 0.5 < max(torsion.qc) < 30  # kcal/mol, a real alkane barrier
            assert torsion.relaxed_after.rmse < torsion.relaxed_before.rmse
        for row in output.torsion_rmse:
            assert row.rmse_after < row.rmse_before and not row.kept_initial
        ids = [pid for row in output.torsion_rmse for pid in row.parameter_ids]
        check_force_field(output.offxml, output.smiles, ids)
        assert output.bespoke_force_field is not None


def test_shared_fragment_torsion_is_driven_once(api_jobs, admin_client):
    pentane, hexane = api_jobs["outputs"]["CCCCC"], api_jobs["outputs"]["CCCCCC"]
    assert len(pentane.qc.record_ids) == 1 and len(hexane.qc.record_ids) == 2
    shared = set(pentane.qc.record_ids) & set(hexane.qc.record_ids)
    assert len(shared) == 1
    drives = set(pentane.qc.record_ids) | set(hexane.qc.record_ids)
    # 2 drives for 3 target torsions; the jobs created exactly those not already on the server
    assert len(drives) == 2
    assert api_jobs["new_drives"] == drives - api_jobs["drives_before"]
    store = JobStore.in_directory(api_jobs["directory"])
    keys = {t.identity.key for o in (pentane, hexane) for t in store.schema(o.id).targets}
    assert len(keys) == 2  # one canonical torsion identity shared by both molecules
    dataset = admin_client.get_dataset("torsiondrive", FACTORY.qc_spec.dataset_name)
    assert keys <= set(dataset.entry_names)


def test_bad_molecules_fail_alone(api_jobs):
    ethane = api_jobs["outputs"]["CC"]
    assert ethane.status == "errored"
    assert ethane.stage.type == "fragmentation"
    assert ethane.error.startswith(f"job {ethane.id} (CC), fragmentation: ")
    assert "nothing to fit" in ethane.error and "\n" not in ethane.error
    assert "C1CC(" in api_jobs["bad_submission"] and "\n" not in api_jobs["bad_submission"]
    assert {o.name for o in api_jobs["listed"]} >= {"CCCCC", "CCCCCC", "CC"}


def test_a_second_executor_on_one_directory_is_refused(embedded_server):
    with BespokeExecutor(n_qc_compute_workers=0, directory=embedded_server.directory) as first:
        assert first.running
        second = BespokeExecutor(n_qc_compute_workers=0, directory=embedded_server.directory)
        with pytest.raises(BespokeFractalError, match="another executor is running") as refused:
            second.__enter__()
        assert str(first.coordinator_pid) in str(refused.value)
    assert not first.running


def test_resubmitting_reuses_fragments_drives_and_fit(api_jobs, embedded_server, admin_client):
    before = torsiondrive_ids(admin_client)
    with BespokeExecutor(
        n_qc_compute_workers=0, directory=embedded_server.directory, poll_interval=0.5
    ) as ex:
        start = time.monotonic()
        output = wait_until_complete(ex.submit("CCCCC", FACTORY), frequency=0.5, timeout=300)
        seconds = time.monotonic() - start
    assert output.status == "success", output.error
    assert "reused" in output.stages[0].note and "reused" in output.stages[2].note
    assert output.qc.new == 0 and output.qc.record_ids == api_jobs["outputs"]["CCCCC"].qc.record_ids
    assert torsiondrive_ids(admin_client) == before
    assert output.offxml == api_jobs["outputs"]["CCCCC"].offxml
    print(f"cached resubmission: {seconds:.1f} s")


# -- the command line ---------------------------------------------------------------------------
def test_cli_run_reuses_what_the_api_computed(api_jobs, embedded_server, admin_client, tmp_path):
    """``executor run`` on the API's directory: launch, submit, watch, retrieve, all cached."""
    before = torsiondrive_ids(admin_client)
    out = tmp_path / "out"
    args = [
        "--directory",
        str(embedded_server.directory),
        "--n-qc-compute-workers",
        "0",
        "--output",
        str(out),
    ]
    result = cli("run", "--smiles", "CCCCC", "--smiles", "CCCCCC", *DEBUG_60, *args, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(path.name for path in out.iterdir())
    assert len(written) == 2 and all(name.startswith("job-") for name in written)
    for job in out.iterdir():
        result_json = json.loads((job / RESULT_NAME).read_text())
        assert result_json["status"] == "success"
        assert "reused" in result_json["stages"][2]["note"]
        assert (job / FORCE_FIELD_NAME).is_file() and (job / RMSE_NAME).is_file()
    assert torsiondrive_ids(admin_client) == before
    assert EmbeddedServer(embedded_server.directory).status().running  # not started by run: left running


class Launched:
    """``executor launch`` in its own process group, as a user runs it in a terminal."""

    def __init__(self, directory: Path) -> None:
        self.log = open(directory.parent / f"launch-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                EXE,
                "executor",
                "launch",
                "--directory",
                str(directory),
                "--n-qc-compute-workers",
                "2",
                "--qc-compute-n-cores",
                "1",
                "--qc-compute-max-mem",
                "1.5",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while "executor running" not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.5)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig: int = signal.SIGINT, timeout: float = 180) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture(scope="module")
def cli_directory(traversable_directory):
    directory = traversable_directory("bf-executor-cli-") / "executor"
    yield directory
    server = EmbeddedServer(directory)
    if server.initialized:
        embedded_managers(server).stop()
        server.stop()


def test_cli_launch_submit_watch_retrieve(cli_directory, tmp_path):
    launched = Launched(cli_directory)
    try:
        again = cli("launch", "--directory", str(cli_directory), timeout=120)
        assert again.returncode == 1 and "another executor is running" in again.stderr

        submitted = cli(
            "submit", "--directory", str(cli_directory), "--smiles", "CCCC", "--smiles", "C(C", *DEBUG_60
        )
        assert submitted.returncode == 1  # one bad molecule
        errors = [line for line in submitted.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "C(C" in errors[0], submitted.stderr
        assert submitted.stdout.startswith("job 1: CCCC"), submitted.stdout

        watched = cli("watch", "--directory", str(cli_directory), "--id", "1", "--interval", "1")
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert "qc-generation running" in watched.stdout and "optimization success" in watched.stdout

        listed = json.loads(cli("list", "--directory", str(cli_directory), "--json").stdout)
        assert [(job["id"], job["status"]) for job in listed] == [("1", "success")]

        out = tmp_path / "butane"
        retrieved = cli("retrieve", "--directory", str(cli_directory), "--id", "1", "--output", str(out))
        assert retrieved.returncode == 0, retrieved.stderr
        assert "RMSE" in retrieved.stdout
        result = json.loads((out / RESULT_NAME).read_text())
        assert result["status"] == "success"
        ids = [pid for torsion in result["results"]["torsions"] for pid in torsion["parameter_ids"]]
        check_force_field((out / FORCE_FIELD_NAME).read_text(), result["smiles"], ids)
        rows = (out / RMSE_NAME).read_text().splitlines()
        assert len(rows) == 2 and rows[0].startswith("target,")
        assert list((out / "plots").glob("*.png"))
    finally:
        code = launched.stop(signal.SIGINT)
    assert code == 0, launched.output()
    assert "executor stopped" in launched.output()
    assert not EmbeddedServer(cli_directory).status().running  # launch started it, launch stopped it


def test_coordinator_killed_mid_qc_resumes_without_recomputing(cli_directory):
    launched = Launched(cli_directory)
    store = JobStore.in_directory(cli_directory)
    admin = EmbeddedServer(cli_directory).connection("admin").client()
    submitted = cli(
        "submit", "--directory", str(cli_directory), "--smiles", "CCCCC", "--workflow", "debug",
        "--set", "qc_spec.grid_spacing=90",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[1].rstrip(":")
    deadline = time.monotonic() + 600
    while True:
        output = store.output(job_id)
        qc = output.stages[1]
        if qc.status == "running" and output.qc.record_ids:
            break
        assert output.status != "errored", output.error
        assert time.monotonic() < deadline
        time.sleep(0.5)
    launched.process.kill()  # SIGKILL: no clean-up of any kind
    launched.process.wait(30)
    drives_at_kill = torsiondrive_ids(admin)
    record_ids = output.qc.record_ids
    assert admin.get_records(record_ids)[0].status.value != "complete"  # really mid-QC

    relaunched = Launched(cli_directory)
    try:
        watched = cli("watch", "--directory", str(cli_directory), "--id", job_id, "--interval", "1")
        assert watched.returncode == 0, watched.stdout + watched.stderr
        drives_at_end = torsiondrive_ids(admin)
    finally:
        code = relaunched.stop(signal.SIGTERM)
    assert code == 0, relaunched.output()
    final = store.output(job_id)
    assert final.status == "success", final.error
    assert final.stages[0].attempts == 1  # fragmentation was not redone
    assert final.stages[2].attempts == 1
    assert final.qc.record_ids == record_ids
    assert drives_at_end == drives_at_kill  # no new QC record
    assert len([o for o in store.outputs() if o.name == "CCCCC"]) == 1  # no duplicate job
    # the relaunch adopted the server the killed executor had started, and stopped it
    assert not EmbeddedServer(cli_directory).status().running


def test_cli_refuses_bad_options_with_one_line(tmp_path):
    cases = [
        (["launch", "--qc-compute-n-cores", "0"], "n_cores must be a whole number of at least 1"),
        (["launch", "--qc-compute-max-mem", "lots"], "not a number"),
        (
            ["launch", "--database-url", "postgresql://me:secret@localhost/jobs"],
            "BESPOKE_FRACTAL_DATABASE_URL",
        ),
        (["submit", "--workflow", "debug"], "at least one --smiles"),
        (["watch", "--id", "7"], "no job 7"),
        (["retrieve", "--id", "x", "--output", str(tmp_path / "out")], "job ids are numbers"),
    ]
    store_dir = tmp_path / "executor"
    store_dir.mkdir()
    JobStore.in_directory(store_dir).close()
    for args, message in cases:
        result = cli(*args, "--directory", str(store_dir), timeout=120)
        assert result.returncode in (1, 2), (args, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert any(message in line for line in lines), (args, result.stderr)
        assert "secret" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
