"""`BespokeExecutor`: the server, compute managers and coordinator of one executor directory,
with a :class:`~bespoke_fractal.executor.client.JobClient` for its jobs.

Submitting a job writes it to the job store; the coordinator (a child process of the one that
entered the executor, or the ``executor launch`` process) picks it up. Jobs therefore survive the
executor: whatever is unfinished when the context exits, or when a process is killed, is resumed
by the next executor on the same directory.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from openff.toolkit import Molecule
from pydantic import BaseModel, ValidationError

from bespoke_fractal.errors import ServerError, validation_line
from bespoke_fractal.executor.client import (
    DEFAULT_DIRECTORY,
    FINAL,
    CombineInput,
    JobClient,
    JobInput,
    WorkflowLike,
    resolve_workflow,
    submit_plan,
    submit_to_store,
)
from bespoke_fractal.executor.config import BespokeWorkerConfig
from bespoke_fractal.executor.coordinator import CoordinatorSettings
from bespoke_fractal.executor.models import BespokeExecutorOutput
from bespoke_fractal.executor.plan import QCPlan
from bespoke_fractal.executor.service import (
    CoordinatorProcess,
    DirectoryLock,
    ExecutorError,
    ServiceConfig,
    serve,
    start_logging,
)
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.executor.supervisor import SupervisedServices
from bespoke_fractal.manager import LocalManagers, ManagerSettings
from bespoke_fractal.molecules import MoleculeInput
from bespoke_fractal.server import EmbeddedServer, ServerConnection, ServerSettings
from bespoke_fractal.session import embedded_managers

if TYPE_CHECKING:
    from bespoke_fractal.optimization.combine import CombineReport, Scan

__all__ = [
    "DEFAULT_DIRECTORY",
    "FINAL",
    "BespokeExecutor",
    "WorkflowLike",
    "resolve_workflow",
    "submit_plan",
    "submit_to_store",
    "wait_until_complete",
]

log = logging.getLogger("bespoke_fractal.executor")

OWNERSHIP_NAME = "executor-services.json"


class ServiceOwnership(BaseModel):
    """Which of the directory's services an executor started (and so stops at exit)."""

    pid: int
    server: bool = False
    managers: bool = False


_ACTIVE: list[BespokeExecutor] = []


class BespokeExecutor:
    """Runs bespoke fits: fragmentation and optimisation in local worker pools, QC torsion
    drives on a QCFractal server (embedded in ``directory`` unless ``fractal_server`` is given).

    Entering the context starts what is missing (embedded server, ``n_qc_compute_workers``
    compute managers, the coordinator process with its worker pools); leaving it stops what it
    started. Jobs live in the directory's job store: unfinished ones are resumed by the next
    executor on the same directory.
    """

    def __init__(
        self,
        n_fragmenter_workers: int = 1,
        fragmenter_worker_config: BespokeWorkerConfig | None = None,
        n_qc_compute_workers: int = 1,
        qc_compute_worker_config: BespokeWorkerConfig | None = None,
        n_optimizer_workers: int = 1,
        optimizer_worker_config: BespokeWorkerConfig | None = None,
        directory: str | Path = DEFAULT_DIRECTORY,
        fractal_server: ServerConnection | str | Path | None = None,
        database_url: str | None = None,
        poll_interval: float = 2.0,
        optimization_timeout: float = 3600.0,
        keep_worse: bool = False,
        max_qc_resets: int = 2,
        qc_stall_seconds: float = 120.0,
        server_settings: ServerSettings | None = None,
    ) -> None:
        if n_qc_compute_workers < 0:
            raise ExecutorError("n_qc_compute_workers must be 0 or more")
        self.directory = Path(directory).absolute()
        self.n_qc_compute_workers = n_qc_compute_workers
        self.qc_compute_worker_config = qc_compute_worker_config or BespokeWorkerConfig(n_cores="auto")
        try:
            self.coordinator_settings = CoordinatorSettings(
                n_fragmenter_workers=n_fragmenter_workers,
                fragmenter_worker_config=fragmenter_worker_config or BespokeWorkerConfig(n_cores=1),
                n_optimizer_workers=n_optimizer_workers,
                optimizer_worker_config=optimizer_worker_config or BespokeWorkerConfig(n_cores=1),
                poll_interval=poll_interval,
                optimization_timeout=optimization_timeout,
                keep_worse=keep_worse,
                max_resets=max_qc_resets,
                qc_stall_seconds=qc_stall_seconds,
            )
        except ValidationError as exc:
            raise ExecutorError(validation_line(exc)) from None
        if fractal_server is not None and server_settings is not None:
            raise ExecutorError("server_settings apply to the embedded server, not to fractal_server")
        if isinstance(fractal_server, (str, Path)):
            fractal_server = ServerConnection.from_file(fractal_server)
        self.fractal_server = fractal_server
        self.database_url = database_url
        self.server_settings = server_settings
        self.client = JobClient(
            self.directory,
            database_url,
            fractal_server,
            server_settings,
            n_fragmenter_workers=self.coordinator_settings.n_fragmenter_workers,
            cores_per_task=self.qc_compute_worker_config.cores,
            create_directory=True,
        )
        self._server: EmbeddedServer | None = None
        self._managers: LocalManagers | None = None
        self._owned = ServiceOwnership(pid=os.getpid())
        self._coordinator: CoordinatorProcess | None = None

    @property
    def manager_settings(self) -> ManagerSettings:
        config = self.qc_compute_worker_config
        return ManagerSettings(
            n_workers=max(self.n_qc_compute_workers, 1),
            cores_per_worker=config.cores,
            memory_per_worker=round(config.memory_per_core * config.cores, 2),
        )

    @property
    def coordinator_pid(self) -> int | None:
        """PID of the coordinator process this executor started (None outside the context)."""
        return self._coordinator.pid if self._coordinator is not None else None

    # -- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> BespokeExecutor:
        self._prepare()
        try:
            connection = self._start_services()
            self._coordinator = CoordinatorProcess.start(self._service_config(connection))
        except BaseException:
            self._stop_services()
            raise
        _ACTIVE.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._coordinator is not None:
            self._coordinator.stop()
            self._coordinator = None
        self._stop_services()
        self.client.close()

    def run_in_foreground(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """What ``executor launch`` does: start the services, run the coordinator in this
        thread until ``stop`` is set, then stop what was started."""
        self._prepare()
        handler = start_logging(self.directory)
        try:
            connection = self._start_services()
            serve(self._service_config(connection), stop, on_ready=on_ready)
        finally:
            self._stop_services()
            logging.getLogger("bespoke_fractal").removeHandler(handler)
            handler.close()

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExecutorError(
                f"cannot create the executor directory {self.directory}: {exc.strerror}"
            ) from None
        DirectoryLock(self.directory).check_free()
        JobStore.in_directory(self.directory, self.database_url).close()  # a bad URL fails here

    def _service_config(self, connection: ServerConnection) -> ServiceConfig:
        supervise = None
        if self._owned.server or self._owned.managers:  # what this executor started, it keeps alive
            supervise = SupervisedServices(
                directory=self.directory,
                server=self._owned.server,
                managers=self.manager_settings if self._owned.managers else None,
            )
        return ServiceConfig(
            directory=self.directory,
            database_url=self.database_url,
            settings=self.coordinator_settings,
            connection=connection,
            supervise=supervise,
        )

    def _start_services(self) -> ServerConnection:
        """The server connection; for the embedded server, start it and the managers if needed."""
        if self.fractal_server is not None:
            self.fractal_server.client()  # one clear line now if unreachable or refused
            if self.n_qc_compute_workers:
                log.info(
                    "external server: no local managers started; run qcfractal-compute-manager "
                    "with a compute account (see manager_configs/)"
                )
            return self.fractal_server
        earlier = self._earlier_ownership()
        self._server = EmbeddedServer(self.directory, self.server_settings)
        self._owned.server = earlier.server or not self._server.status().running
        self._write_ownership()
        self._server.start()
        if self.n_qc_compute_workers > 0:
            managers = embedded_managers(self._server, self.manager_settings)
            if not any(m.running for m in managers.status()):
                self._owned.managers = True
                self._write_ownership()
                managers.start()
            else:
                self._owned.managers = earlier.managers
            self._managers = managers
        return self._server.connection("submit")

    def _stop_services(self) -> None:
        if self._managers is not None and self._owned.managers:
            self._managers.stop()
        self._managers = None
        if self._server is not None and self._owned.server:
            try:
                self._server.stop()
            except ServerError as exc:
                log.warning("stopping the embedded server: %s", exc)
        self._server = None
        if self._owned.server or self._owned.managers:
            (self.directory / OWNERSHIP_NAME).unlink(missing_ok=True)
        self._owned = ServiceOwnership(pid=os.getpid())

    def _earlier_ownership(self) -> ServiceOwnership:
        """Services started by an executor that died without stopping them are adopted."""
        path = self.directory / OWNERSHIP_NAME
        try:
            earlier = ServiceOwnership.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return ServiceOwnership(pid=os.getpid())
        if psutil.pid_exists(earlier.pid) and earlier.pid != os.getpid():
            return ServiceOwnership(pid=os.getpid())  # still alive: it stops its own services
        return earlier

    def _write_ownership(self) -> None:
        if self._owned.server or self._owned.managers:
            (self.directory / OWNERSHIP_NAME).write_text(self._owned.model_dump_json())

    @property
    def running(self) -> bool:
        return self._coordinator is not None and self._coordinator.alive()

    # -- jobs (delegated to the client) ---------------------------------------------------------
    @property
    def store(self) -> JobStore:
        """The job store of the directory (opened on first use, creating the directory)."""
        return self.client.store

    def submit(self, input_schema: JobInput, workflow: WorkflowLike = None, name: str | None = None) -> str:
        """Queue a fit and return its job id: a job description from the factory, or a molecule
        (SMILES, file or ``Molecule``) with a workflow (factory, preset name or file)."""
        return self.client.submit(input_schema, workflow, name)

    def retrieve(self, job_id: str) -> BespokeExecutorOutput:
        """A job's state, stages and (once it succeeded) results."""
        return self.client.retrieve(job_id)

    def plan(
        self,
        molecules: str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput],
        workflow: WorkflowLike = None,
        enumerate_stereo: bool = False,
        start_server: bool = True,
    ) -> QCPlan:
        """Cost preview of fitting ``molecules``: nothing is submitted (see :meth:`JobClient.plan`)."""
        return self.client.plan(molecules, workflow, enumerate_stereo, start_server)

    def submit_plan(self, plan: QCPlan) -> list[str | ExecutorError]:
        """Queue the jobs of a plan, in order (see :func:`submit_plan`)."""
        return self.client.submit_plan(plan)

    def check_coordinator(self, job_id: str | int) -> None:
        """Raise if the coordinator this executor started has stopped (jobs then wait)."""
        if self._coordinator is not None and not self.running:
            raise ExecutorError(
                f"job {job_id}: the coordinator process stopped (see {self.directory}/executor.log); "
                "the job resumes when an executor runs on this directory again"
            )

    def list(self) -> list[BespokeExecutorOutput]:
        """Every job of the directory, in id order."""
        return self.client.list()

    def combine(
        self, jobs: Iterable[CombineInput], output_path: str | Path, scan: Scan = "changed"
    ) -> CombineReport:
        """One checked force field for a series of fitted jobs (see :meth:`JobClient.combine`)."""
        return self.client.combine(jobs, output_path, scan)


def wait_until_complete(
    job_id: str,
    frequency: float = 2.0,
    timeout: float | None = None,
    directory: str | Path | None = None,
    database_url: str | None = None,
    on_update: Callable[[BespokeExecutorOutput], None] | None = None,
) -> BespokeExecutorOutput:
    """Block until the job has succeeded or errored and return its output.

    The job is looked up in the innermost running executor, else in ``directory``.
    ``on_update`` (a callable) is given the output each time it is read.
    """
    executor = _ACTIVE[-1] if directory is None and _ACTIVE else None
    if executor is not None:
        check = partial(executor.check_coordinator, job_id)
        return executor.client.wait(job_id, frequency, timeout, on_update, check)
    with JobClient(directory or DEFAULT_DIRECTORY, database_url) as client:
        return client.wait(job_id, frequency, timeout, on_update)
