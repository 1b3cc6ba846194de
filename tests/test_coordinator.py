"""The coordinator's sequencing on a SQLite job store, without a QCFractal server.

Fragmentation and optimisation run in their real worker pools; the QC stage is a stand-in that
completes every job's QC with no drives one step after it first sees the job. The fits then
fail for want of a server (the connection points at a closed port), or reuse a fit already in
the store.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from openff.toolkit import Molecule

from bespoke_fractal.executor.config import CoordinatorSettings
from bespoke_fractal.executor.coordinator import Coordinator
from bespoke_fractal.executor.models import QCProgress
from bespoke_fractal.executor.stages import PoolStage
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.schema.fits import OptimizationResult
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.workflow import BespokeWorkflowFactory

pytestmark = pytest.mark.fast

# no fragmentation: the molecule is its own fragment, fragmented in a fraction of a second
WORKFLOW = BespokeWorkflowFactory.from_preset("debug", fragmentation_engine={"type": "none"})
BUTANE = "CCCC"  # one rotatable bond
ETHANOL = "CCO"  # no bond matches the target torsion SMARTS: nothing to fit
SETTINGS = CoordinatorSettings(poll_interval=0.2)


class StandInQC:
    """Stands in for the QC stage: a job waiting for QC is marked running (no drives yet), and
    in the next step given an empty drive list and finished."""

    stage = "qc-generation"

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.seen: list[int] = []
        self.connections: list[ServerConnection] = []
        self.closed = False

    def step(self) -> None:
        for job in self.store.job_records(self.stage, "running"):
            self.store.set_drives(job.id, [], QCProgress())
            self.store.finish_stage(job.id, self.stage, note="stand-in: no drives")
        for job in self.store.job_records(self.stage, "waiting"):
            self.seen.append(job.id)
            self.store.start_stage(job.id, self.stage, note="stand-in: submitted")

    def reconnect(self, connection: ServerConnection) -> None:
        self.connections.append(connection)

    def close(self) -> None:
        self.closed = True


def closed_port_connection() -> ServerConnection:
    """A connection to a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ServerConnection(address=f"http://127.0.0.1:{port}")


def add_job(store: JobStore, smiles: str, name: str) -> int:
    """Queue a molecule as ``submit`` does."""
    molecule = Molecule.from_smiles(smiles)
    return int(
        store.add_job(
            name=name,
            smiles=molecule.to_smiles(mapped=True),
            workflow_json=WORKFLOW.model_dump_json(),
            schema_id=WORKFLOW.job_id(molecule),
        )
    )


def step_until(coordinator: Coordinator, done: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the coordinator did not get there in time"
        coordinator.step()
        time.sleep(SETTINGS.poll_interval)


def finished(store: JobStore, *job_ids: int) -> Callable[[], bool]:
    return lambda: all(store.output(job_id).status in ("success", "errored") for job_id in job_ids)


def stage_states(store: JobStore, job_id: int) -> list[tuple[str, str]]:
    return [(stage.type, stage.status) for stage in store.output(job_id).stages]


def test_jobs_move_through_the_stages_and_share_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bespoke_fractal")
    store = JobStore.in_directory(tmp_path)
    connection = closed_port_connection()
    qc = StandInQC(store)
    butane = add_job(store, BUTANE, "butane")
    butane_again = add_job(store, BUTANE, "butane again")
    ethanol = add_job(store, ETHANOL, "ethanol")
    with Coordinator(tmp_path, store, connection, SETTINGS, qc=qc) as coordinator:
        step_until(coordinator, finished(store, butane, butane_again, ethanol))
        # a job submitted after the molecule was fragmented reuses its job description
        butane_later = add_job(store, BUTANE, "butane later")
        coordinator.step()
        later = store.output(butane_later)
        assert later.stages[0].status == "success"
        assert later.stages[0].note == "same molecule and workflow as an earlier job: reused"
        assert store.job_record(butane_later).schema_text == store.job_record(butane).schema_text
    assert qc.closed

    # nothing to fit: fragmentation records the one-line reason; the later stages never start
    output = store.output(ethanol)
    assert output.status == "errored"
    assert stage_states(store, ethanol) == [
        ("fragmentation", "errored"),
        ("qc-generation", "waiting"),
        ("optimization", "waiting"),
    ]
    assert "nothing to fit" in output.stages[0].error and "\n" not in output.stages[0].error
    assert output.error.startswith(f"job {ethanol} (ethanol), fragmentation: ")
    assert store.job_record(ethanol).schema_text is None
    assert ethanol not in qc.seen

    # butane: fragmented once for both jobs, through the stand-in QC, one fit for both that
    # cannot reach the server
    assert qc.seen == [butane, butane_again, butane_later]
    started = [r.getMessage() for r in caplog.records if r.getMessage().endswith("started")]
    assert started == [
        f"job {butane}: fragmentation started",
        f"job {ethanol}: fragmentation started",
        f"job {butane}: optimisation started",
    ]
    for job_id in (butane, butane_again):
        output = store.output(job_id)
        assert output.status == "errored"
        assert stage_states(store, job_id) == [
            ("fragmentation", "success"),
            ("qc-generation", "success"),
            ("optimization", "errored"),
        ]
        assert output.stages[0].note.startswith("1 fragment(s), 1 torsion drive(s)")
        assert output.stages[1].note == "stand-in: no drives"
        assert output.stages[2].error == (
            f"cannot reach a QCFractal server at {connection.address}: connection refused or host unreachable"
        )
        record = store.job_record(job_id)
        assert record.drives == [] and record.fit_key is None
        assert record.optimization_schema.id == record.schema_id
        assert len(record.optimization_schema.targets) == 1


def test_a_fit_already_in_the_store_is_reused(tmp_path: Path) -> None:
    store = JobStore.in_directory(tmp_path)
    butane = add_job(store, BUTANE, "butane")
    with Coordinator(tmp_path, store, closed_port_connection(), SETTINGS, qc=StandInQC(store)) as coordinator:
        step_until(coordinator, lambda: store.output(butane).stages[1].status == "running")
        record = store.job_record(butane)
        key = record.needed_fit_key()
        fit = OptimizationResult(
            schema_id=record.schema_id, smiles=record.smiles, converged=True, iterations=3, fit_seconds=1.0
        )
        store.add_fit(key, fit)
        step_until(coordinator, finished(store, butane))
    output = store.output(butane)
    assert output.status == "success", output.error
    assert output.stages[2].note.startswith("reused an identical earlier fit; 3 iteration(s)")
    assert store.job_record(butane).fit_key == key
    assert output.results == fit


def kill_workers(coordinator: Coordinator) -> None:
    """SIGKILL every process of the fragmentation pool, as the kernel's OOM killer would."""
    processes = list(coordinator.fragmentation.pool()._processes.values())
    assert processes
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join(timeout=30)


def collect_until_done(stage: PoolStage, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while stage.in_flight:
        assert time.monotonic() < deadline, "the pool did not report the dead worker in time"
        stage.collect()
        time.sleep(0.1)


def test_a_dead_worker_is_retried_then_fails_the_stage(tmp_path: Path) -> None:
    store = JobStore.in_directory(tmp_path)
    butane = add_job(store, BUTANE, "butane")
    settings = SETTINGS.model_copy(update={"max_worker_attempts": 2})
    qc = StandInQC(store)
    with Coordinator(tmp_path, store, closed_port_connection(), settings, qc=qc) as coordinator:
        stage = coordinator.fragmentation
        stage.start()
        assert (store.output(butane).stages[0].status, store.output(butane).stages[0].attempts) == (
            "running",
            1,
        )
        kill_workers(coordinator)
        collect_until_done(stage)
        fragmentation = store.output(butane).stages[0]
        assert (fragmentation.status, fragmentation.attempts) == ("waiting", 1)
        assert fragmentation.note == "a fragmenter worker process died; attempt 2 next"

        stage.start()  # in a new pool
        assert (store.output(butane).stages[0].status, store.output(butane).stages[0].attempts) == (
            "running",
            2,
        )
        kill_workers(coordinator)
        collect_until_done(stage)
        coordinator.step()
    output = store.output(butane)
    assert output.status == "errored"
    assert output.stages[0].status == "errored"
    assert output.stages[0].error == "a fragmenter worker process died 2 times (killed, or out of memory?)"
    assert qc.seen == []


def test_leaving_puts_running_work_back_to_waiting(tmp_path: Path) -> None:
    store = JobStore.in_directory(tmp_path)
    butane = add_job(store, BUTANE, "butane")
    with Coordinator(tmp_path, store, closed_port_connection(), SETTINGS, qc=StandInQC(store)) as coordinator:
        coordinator.step()
        assert store.output(butane).stages[0].status == "running"
        assert coordinator.fragmentation.in_flight
    assert not coordinator.fragmentation.in_flight
    fragmentation = store.output(butane).stages[0]
    assert (fragmentation.status, fragmentation.note) == ("waiting", "interrupted; restarted")
    assert store.output(butane).status == "running"
