"""QC on a real Slurm: a one-node cluster (scripts/local-slurm.sh), a manager started with
``bespoke-fractal manager start --config`` from manager_configs/slurm.yaml, workers as Slurm jobs.

A worker's Slurm job is cancelled mid-task (as a walltime kill or a lost node would end it);
the task goes back to the server and completes in another job.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import run_cli
from openff.toolkit import Molecule

from bespoke_fractal.qc import default_dihedral, get_preset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-slurm.sh"
TEMPLATE = ROOT / "manager_configs" / "slurm.yaml"
CLUSTER = "bf-test-slurm"
TAG = "bf-slurm"


@pytest.fixture(scope="module")
def slurm(traversable_directory) -> dict[str, str]:
    """The environment of a running one-node Slurm (SLURM_CONF set); skipped where none starts."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm needs root (its daemons run as root)")
    env = dict(os.environ, BESPOKE_FRACTAL_SLURM_DIR=str(traversable_directory("bf-slurm-")))
    started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        lines = started.stderr.strip().splitlines() or ["no output"]
        pytest.skip(f"a local Slurm cannot be started here: {lines[-1]}")
    env["SLURM_CONF"] = str(Path(env["BESPOKE_FRACTAL_SLURM_DIR"]) / "slurm.conf")
    yield env
    subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def slurm_config(directory: Path) -> Path:
    """manager_configs/slurm.yaml with its EDIT values filled in for the one-node cluster."""
    config = yaml.safe_load(TEMPLATE.read_text())
    config.update(cluster=CLUSTER, update_frequency=1, logfile="manager.log", parsl_run_dir="parsl")
    [executor] = config["executors"].values()
    executor.update(
        compute_tags=[TAG],  # claims only drives submitted with this tag
        partition="debug",
        account=None,
        walltime="00:20:00",
        cores_per_worker=1,
        memory_per_worker=1.0,
        workers_per_node=1,
        max_nodes=2,
        exclusive=False,
        worker_init=["export OMP_NUM_THREADS=1", 'echo "slurm job $SLURM_JOB_ID"'],
        scratch_directory=str(directory),
        bind_address="127.0.0.1",
        # parsl declares a worker lost after 15 s without heartbeats (default 120 s)
        extra_executor_options={"heartbeat_period": 5, "heartbeat_threshold": 15},
    )
    path = directory / "slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def slurm_jobs(env: dict[str, str]) -> dict[str, str]:
    """Every job of the cluster, running or finished: id -> "name state"."""
    jobs = {}
    finished = subprocess.run(
        ["sacct", "-c", "-n", "-P", "-o", "jobid,jobname,state"], env=env, capture_output=True, text=True
    )
    queued = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T"], env=env, capture_output=True, text=True)
    for line in (finished.stdout + queued.stdout).splitlines():
        parts = line.split("|")
        if len(parts) == 3:
            jobs[parts[0]] = f"{parts[1]} {parts[2]}"
    return jobs


def task_in_slurm_job() -> tuple[psutil.Process, str] | None:
    """A running QC task process and the Slurm job it runs in."""
    for proc in psutil.process_iter(["cmdline"]):
        if any("qcengine_compute.py" in part for part in proc.info["cmdline"] or []):
            try:
                job = proc.environ().get("SLURM_JOB_ID")
            except psutil.Error:
                continue
            if job:
                return proc, job
    return None


def test_drive_runs_in_slurm_jobs_and_survives_a_cancelled_job(
    slurm, embedded_server, managers, stage, admin_client, tmp_path
):
    config = slurm_config(tmp_path)
    env = dict(slurm)
    assert managers.stop() == 2  # only the Slurm manager computes during this test
    try:
        started = run_cli(
            "manager",
            "start",
            "--config",
            str(config),
            "--directory",
            str(embedded_server.directory),
            env=env,
        )
        assert started.returncode == 0, started.stderr
        status = run_cli("manager", "status", "--directory", str(embedded_server.directory), env=env)
        assert "slurm" in status.stdout and "batch jobs" in status.stdout

        molecule = Molecule.from_smiles("CCC(C)C")  # isopentane: driven by no other test
        drive = stage.submit(
            molecule,
            [default_dihedral(molecule, (1, 2))],
            get_preset("debug", grid_spacing=90, compute_tag=TAG),
        )[0]
        deadline = time.monotonic() + 300
        while (found := task_in_slurm_job()) is None:
            assert time.monotonic() < deadline, "no QC task ran in a Slurm job"
            time.sleep(0.1)
        victim, job = found
        subprocess.run(["scancel", job], env=env, check=True)
        result = stage.wait([drive], timeout=900, progress=False)[0]
        assert result.ok, result.error
        assert not victim.is_running()
    finally:
        stopped = run_cli(
            "manager", "stop", "--config", str(config), "--directory", str(embedded_server.directory), env=env
        )
        managers.start()
    assert stopped.returncode == 0, stopped.stderr

    jobs = slurm_jobs(env)
    assert "CANCELLED" in jobs[job]
    parsl_jobs = [j for j, text in jobs.items() if text.startswith("parsl.slurm.block")]
    assert len(parsl_jobs) >= 2  # the cancelled job and at least one that finished the drive
    record = admin_client.get_torsiondrives(result.record_id)
    optimizations = [o for opts in record.optimizations.values() for o in opts]
    # every optimisation of the drive was computed by the Slurm manager's workers
    assert optimizations and all(o.manager_name.startswith(f"{CLUSTER}-") for o in optimizations)
    # the lost task went back to the server and ran again: one optimisation has two attempts
    assert max(len(o.compute_history) for o in optimizations) >= 2
    [reported] = list(admin_client.query_managers(cluster=CLUSTER))
    assert reported.successes >= len(optimizations)
