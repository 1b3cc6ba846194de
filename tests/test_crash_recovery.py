"""kill -9 of the coordinator in every stage, of a compute manager and of the embedded server
(QCFractal and PostgreSQL) mid-QC: every job completes, and nothing finished is done again.

All processes are real and are killed with SIGKILL, as the kernel's OOM killer or a crashed
node would; no clean-up code of theirs runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from helpers import torsiondrive_ids
from qc_tasks import qc_tasks

from bespoke_fractal import processes
from bespoke_fractal.executor import BespokeExecutor, JobStore, submit_to_store, wait_until_complete
from bespoke_fractal.executor.coordinator import CoordinatorSettings
from bespoke_fractal.executor.service import CoordinatorProcess, ServiceConfig
from bespoke_fractal.server import EmbeddedServer, ServerSettings
from bespoke_fractal.session import embedded_managers
from bespoke_fractal.workflow import BespokeWorkflowFactory


def factory(grid: int) -> BespokeWorkflowFactory:
    return BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": grid})


def wait_for(predicate, timeout: float = 600, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def stage_running(store: JobStore, job_id: str, stage: int):
    def check():
        output = store.output(job_id)
        assert output.status != "errored", output.error
        return output if output.stages[stage].status == "running" else None

    return check


def test_coordinator_killed_in_every_stage(embedded_server, managers, admin_client):
    """One job, its coordinator SIGKILLed in fragmentation, in QC, at the fragmentation-QC
    boundary (server unreachable) and in the fit; each time a new executor takes over."""
    directory = embedded_server.directory
    store = JobStore.in_directory(directory)
    before = torsiondrive_ids(admin_client)

    def executor() -> BespokeExecutor:
        return BespokeExecutor(n_qc_compute_workers=0, directory=directory, poll_interval=0.3)

    def kill(ex: BespokeExecutor) -> None:
        os.kill(ex.coordinator_pid, signal.SIGKILL)
        wait_for(lambda: not ex.running, 30, "the coordinator to die")
        ex.__exit__(None, None, None)

    # 1. mid-fragmentation (a molecule new to the AM1 cache, so fragmentation takes seconds)
    ex = executor().__enter__()
    job_id = ex.submit("CCOC", factory(90))
    wait_for(stage_running(store, job_id, 0), what="fragmentation to start")
    kill(ex)
    # 2. mid-QC
    ex = executor().__enter__()
    output = wait_for(lambda: (o := store.output(job_id)).qc.record_ids and o, what="QC to be submitted")
    record_ids = output.qc.record_ids
    fragmentations = output.stages[0].attempts
    kill(ex)
    # 3. mid-fit
    ex = executor().__enter__()
    wait_for(stage_running(store, job_id, 2), what="the fit to start")
    kill(ex)
    ex = executor().__enter__()
    try:
        final = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    finally:
        ex.__exit__(None, None, None)

    assert final.status == "success", final.error
    assert final.stages[0].attempts == fragmentations <= 2  # redone only if the kill cut it short
    assert final.qc.record_ids == record_ids  # the drives submitted before the kill were kept
    assert torsiondrive_ids(admin_client) - before == set(record_ids)  # and computed once
    assert final.stages[2].attempts == 2  # the fit cut short was run again, once
    assert [o.id for o in store.outputs() if o.name == "CCOC"] == [job_id]


def test_coordinator_killed_at_the_fragmentation_qc_boundary(
    embedded_server, managers, traversable_directory
):
    """With the server unreachable the job rests between its finished fragmentation and its QC
    submission; a coordinator killed there leaves a successor that submits it once."""
    directory = traversable_directory("bf-boundary-") / "executor"
    directory.mkdir()
    store = JobStore.in_directory(directory)
    real = embedded_server.connection("submit")
    unreachable = real.model_copy(update={"address": "http://127.0.0.1:9"})
    settings = CoordinatorSettings(poll_interval=0.3)
    child = CoordinatorProcess.start(
        ServiceConfig(directory=directory, settings=settings, connection=unreachable)
    )
    job_id = submit_to_store(store, "CCCC", factory(90))
    wait_for(lambda: store.output(job_id).stages[0].status == "success", what="fragmentation")
    time.sleep(1.0)  # several steps fail to reach the server
    output = store.output(job_id)
    assert output.stages[1].status == "waiting" and not output.qc.record_ids
    os.kill(child.pid, signal.SIGKILL)
    child.process.wait(30)
    with BespokeExecutor(n_qc_compute_workers=0, directory=directory, fractal_server=real, poll_interval=0.3):
        final = wait_until_complete(job_id, frequency=0.5, timeout=900)
    assert final.status == "success", final.error
    assert final.stages[0].attempts == 1 and len(final.qc.record_ids) == 1


@pytest.fixture(scope="module")
def owned(traversable_directory):
    """An executor that starts its own embedded server and one manager, in a fresh directory;
    the server declares a manager dead after 3 missed 2 s heartbeats (6 s, not the default 30 s)."""
    directory = traversable_directory("bf-crash-") / "executor"
    with BespokeExecutor(
        n_qc_compute_workers=1,
        directory=directory,
        poll_interval=0.5,
        qc_stall_seconds=8,  # a stalled drive is only revived when it has no state and no tasks
        server_settings=ServerSettings(heartbeat_frequency=2),
    ) as ex:
        yield ex
    assert not EmbeddedServer(directory).status().running


def _dead(pid: int) -> bool:
    """Gone, or a zombie (a child of this process that nobody has reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killed_manager_is_restarted_and_its_task_recomputed_once(owned):
    server = EmbeddedServer(owned.directory)
    admin = server.connection("admin").client()
    before = torsiondrive_ids(admin)
    job_id = owned.submit("CCSC", factory(90))
    wait_for(lambda: qc_tasks("C3H8S"), what="a QC task of this drive to run")
    [manager] = [m for m in embedded_managers(server).status() if m.running]
    victims = [psutil.Process(manager.pid), *psutil.Process(manager.pid).children(recursive=True)]
    for proc in victims:
        proc.kill()
    output = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert output.status == "success", output.error
    [again] = [m for m in embedded_managers(server).status() if m.running]
    assert again.pid != manager.pid  # the supervisor started a new one
    assert torsiondrive_ids(admin) - before == set(output.qc.record_ids)


def test_killed_server_and_postgres_are_restarted_and_the_job_completes(owned):
    server = EmbeddedServer(owned.directory)
    admin = server.connection("admin").client()
    before = torsiondrive_ids(admin)
    job_id = owned.submit("CC(=O)OC", factory(90))
    output = wait_for(lambda: (o := owned.retrieve(job_id)).qc.record_ids and o, what="QC to be submitted")
    server_pid = processes.read_pid(server.pid_file)
    postmaster = int((server.postgres.data_dir / "postmaster.pid").read_text().split()[0])
    for pid in (server_pid, postmaster):
        psutil.Process(pid).kill()
    wait_for(lambda: _dead(server_pid), 30, "the server to die")
    final = wait_until_complete(job_id, frequency=0.5, timeout=1200)
    assert final.status == "success", final.error
    assert final.qc.record_ids == output.qc.record_ids
    admin = server.connection("admin").client()
    assert torsiondrive_ids(admin) - before == set(output.qc.record_ids)
    assert processes.read_pid(server.pid_file) != server_pid
    # nothing of the killed server is left serving (its API process was a child in its group)
    assert not [p for p in _group(server_pid) if not _dead(p.pid)]


def _group(leader: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == leader:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.mark.parametrize("parent_lives", [True, False])
def test_a_worker_whose_coordinator_died_before_it_started_does_nothing(tmp_path, parent_lives):
    """A pool worker that starts up (seconds of imports) after its coordinator was killed is
    reparented before it can ask for PDEATHSIG; it must exit instead of taking the work."""
    flag = tmp_path / "worked"
    worker = (
        "import sys, time; time.sleep(1.5); from bespoke_fractal.processes import die_with_parent; "
        f"die_with_parent(int(sys.argv[1])); open({str(flag)!r}, 'w').close()"
    )
    parent = (
        "import os, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {worker!r}, str(os.getpid())]); "
        f"time.sleep({3.5 if parent_lives else 0})"
    )
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=60)
    time.sleep(0 if parent_lives else 3.0)
    assert flag.exists() == parent_lives
