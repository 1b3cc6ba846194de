"""`BespokeExecutor`: the server, compute managers and coordinator of one executor directory.

Submitting a job writes it to the job store; the coordinator (a child process of the one that
entered the executor, or the ``executor launch`` process) picks it up. Jobs therefore survive the
executor: whatever is unfinished when the context exits, or when a process is killed, is resumed
by the next executor on the same directory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
from openff.toolkit import Molecule
from pydantic import BaseModel, ValidationError

from bespoke_fractal.errors import ServerError
from bespoke_fractal.executor.config import BespokeWorkerConfig
from bespoke_fractal.executor.coordinator import CoordinatorSettings
from bespoke_fractal.executor.models import BespokeExecutorOutput
from bespoke_fractal.executor.plan import QCPlan, plan_jobs
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
from bespoke_fractal.molecules import MoleculeInput, load_molecule
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.server import EmbeddedServer, ServerConnection, ServerSettings
from bespoke_fractal.session import embedded_managers
from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

if TYPE_CHECKING:
    from qcportal import PortalClient

log = logging.getLogger("bespoke_fractal.executor")

DEFAULT_DIRECTORY = Path("bespoke-executor")
OWNERSHIP_NAME = "executor-services.json"
FINAL = ("success", "errored")

WorkflowLike = BespokeWorkflowFactory | str | Path | None


def resolve_workflow(workflow: WorkflowLike) -> BespokeWorkflowFactory:
    """A workflow factory from itself, a preset name or a YAML/JSON file (None: ``default``)."""
    if isinstance(workflow, BespokeWorkflowFactory):
        return workflow
    if workflow is None:
        return BespokeWorkflowFactory.from_preset("default")
    path = Path(workflow)
    if path.suffix.lower() in {".yaml", ".yml", ".json"} or path.exists():
        return BespokeWorkflowFactory.from_file(path)
    return BespokeWorkflowFactory.from_preset(str(workflow))


def submit_to_store(
    store: JobStore,
    item: Molecule | str | Path | MoleculeInput | BespokeOptimizationSchema,
    workflow: WorkflowLike = None,
    name: str | None = None,
) -> str:
    """Queue one job; its molecule is checked now (one clear line if unreadable)."""
    if isinstance(item, BespokeOptimizationSchema):
        # a job description carries its own settings: ``workflow`` is not needed
        molecule = item.parent_molecule()
        settings = item.model_dump(mode="json", exclude={"id", "smiles", "fragmentation"})
        settings["fragmentation_engine"] = {"type": item.fragmentation.fragmenter}
        return store.add_job(
            name=name or molecule.to_smiles(explicit_hydrogens=False),
            smiles=molecule.to_smiles(mapped=True),
            workflow_json=json.dumps(settings),
            schema_id=item.id,
            schema_json=item.model_dump_json(),
        )
    if isinstance(item, MoleculeInput):
        if not item.ok:
            raise ExecutorError(
                f"{item.name}: {item.error}" if not item.error.startswith(item.name) else item.error
            )
        name, item = name or item.name, item.molecule
    factory = resolve_workflow(workflow)
    molecule = load_molecule(item)
    return store.add_job(
        name=name or molecule.name or molecule.to_smiles(explicit_hydrogens=False),
        smiles=molecule.to_smiles(mapped=True),
        workflow_json=factory.model_dump_json(),
        schema_id=factory.job_id(molecule),
    )


def submit_plan(store: JobStore, plan: QCPlan) -> list[str | ExecutorError]:
    """Queue the jobs of a plan as fragmented there, not fragmented again. Each is the job a
    molecule submission makes (same id, so it finds earlier jobs' descriptions and fits; an
    earlier description of the same molecule and workflow is kept in place of the plan's); a
    molecule whose fragmentation failed is queued as a molecule, so its job records the error like
    any other; an unreadable one is its error, in its place."""
    queued: list[str | ExecutorError] = []
    for outcome, item in zip(plan.outcomes, plan.inputs, strict=True):
        try:
            if not outcome.ok:
                queued.append(submit_to_store(store, item, plan.workflow, outcome.name))
                continue
            schema_id = plan.workflow.job_id(item.molecule)
            earlier = store.find_schema(schema_id)
            job_id = store.add_job(
                name=outcome.name,
                smiles=item.molecule.to_smiles(mapped=True),
                workflow_json=plan.workflow.model_dump_json(),
                schema_id=schema_id,
                schema_json=earlier or outcome.schema_.model_dump_json(),
                note="same molecule and workflow as an earlier job: reused"
                if earlier
                else f"fragmented at submission, {outcome.seconds:.1f} s",
                attempts=0 if earlier else 1,
            )
            queued.append(job_id)
        except ExecutorError as exc:
            queued.append(exc)
    return queued


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
            error = exc.errors()[0]
            raise ExecutorError(f"{error['loc'][0]}: {error['msg']}") from None
        if fractal_server is not None and server_settings is not None:
            raise ExecutorError("server_settings apply to the embedded server, not to fractal_server")
        if isinstance(fractal_server, (str, Path)):
            fractal_server = ServerConnection.from_file(fractal_server)
        self.fractal_server = fractal_server
        self.database_url = database_url
        self.server_settings = server_settings
        self.store: JobStore | None = None
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

    def __exit__(self, *_exc) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        if self._coordinator is not None:
            self._coordinator.stop()
            self._coordinator = None
        self._stop_services()
        if self.store is not None:
            self.store.close()
            self.store = None

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

    # -- jobs ----------------------------------------------------------------------------------
    def _store(self) -> JobStore:
        if self.store is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.store = JobStore.in_directory(self.directory, self.database_url)
        return self.store

    def submit(
        self,
        input_schema: BespokeOptimizationSchema | Molecule | str | Path,
        workflow: WorkflowLike = None,
        name: str | None = None,
    ) -> str:
        """Queue a fit and return its job id: a job description from the factory, or a molecule
        (SMILES, file or ``Molecule``) with a workflow (factory, preset name or file)."""
        return submit_to_store(self._store(), input_schema, workflow, name)

    def retrieve(self, job_id: str) -> BespokeExecutorOutput:
        return self._store().output(job_id)

    def plan(
        self,
        molecules: str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput],
        workflow: WorkflowLike = None,
        enumerate_stereo: bool = False,
        start_server: bool = True,
    ) -> QCPlan:
        """Cost preview of fitting ``molecules``: nothing is submitted. Fragments them (with the
        directory's AM1 cache) and asks this executor's server which drives exist; an embedded
        server that is not running is started for the lookup and stopped again (with
        ``start_server`` False the cache is then not checked)."""
        factory = resolve_workflow(workflow)
        with self._lookup_client(start_server) as (client, server):
            return plan_jobs(
                molecules,
                factory,
                client,
                cache_directory=self.directory / "am1-cache",
                n_workers=self.coordinator_settings.n_fragmenter_workers,
                server=server,
                cores_per_task=self.qc_compute_worker_config.cores,
                enumerate_stereo=enumerate_stereo,
            )

    def submit_plan(self, plan: QCPlan) -> list[str | ExecutorError]:
        """Queue the jobs of a plan, in order (see :func:`submit_plan`)."""
        return submit_plan(self._store(), plan)

    @contextmanager
    def _lookup_client(self, start_server: bool) -> Iterator[tuple[PortalClient | None, str]]:
        if self.fractal_server is not None:
            yield self.fractal_server.client(), self.fractal_server.address
            return
        server = EmbeddedServer(self.directory, self.server_settings)
        if not server.initialized:
            yield None, f"no embedded server in {self.directory} yet"
            return
        started = not server.status().running
        if started and not start_server:
            yield None, f"the embedded server in {self.directory} is not running"
            return
        if started:
            server.start()
        try:
            yield server.connection("submit").client(), f"embedded server in {self.directory}"
        finally:
            if started:
                server.stop()

    def list(self) -> list[BespokeExecutorOutput]:
        return self._store().outputs()


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
        store = executor._store()
    else:
        store = JobStore.in_directory(directory or DEFAULT_DIRECTORY, database_url)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        output = store.output(job_id)
        if on_update is not None:
            on_update(output)
        if output.status in FINAL:
            return output
        if executor is not None and executor._coordinator is not None and not executor.running:
            raise ExecutorError(
                f"job {job_id}: the coordinator process stopped (see {executor.directory}/executor.log); "
                "the job resumes when an executor runs on this directory again"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise ExecutorError(
                f"job {job_id} not finished after {timeout:.0f} s "
                f"(stage {output.stage.type}: {output.stage.status})"
            )
        time.sleep(frequency)
