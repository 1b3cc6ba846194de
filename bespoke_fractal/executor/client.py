"""`JobClient`: submit, plan, list, retrieve, wait for and watch the jobs of one executor directory.

It talks to the directory's job store only (and, to plan, to the QC server); the services that
work on the jobs are :class:`~bespoke_fractal.executor.executor.BespokeExecutor`'s. Both the
Python API and the command line use it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from openff.toolkit import Molecule

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.executor.config import machine_cores
from bespoke_fractal.executor.models import BespokeExecutorOutput
from bespoke_fractal.executor.plan import QCPlan, plan_jobs
from bespoke_fractal.executor.service import ExecutorError
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.molecules import MoleculeInput, load_molecule
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.server import EmbeddedServer, ServerConnection, ServerSettings
from bespoke_fractal.session import temporary_server
from bespoke_fractal.workflow.batch import load_batch
from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

if TYPE_CHECKING:
    from qcportal import PortalClient

    from bespoke_fractal.optimization.combine import CombineJob, CombineReport, Scan

DEFAULT_DIRECTORY = Path("bespoke-executor")
FINAL = ("success", "errored")

WorkflowLike = BespokeWorkflowFactory | str | Path | None
JobInput = Molecule | str | Path | MoleculeInput | BespokeOptimizationSchema
CombineInput = str | int | Path | BespokeExecutorOutput
Sources = str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput]


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
    store: JobStore, item: JobInput, workflow: WorkflowLike = None, name: str | None = None
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


@dataclass(frozen=True)
class Submission:
    """One molecule of a batch: its job id, or why it was not queued."""

    name: str
    job_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.job_id is not None


class JobClient:
    """The jobs of one executor directory: queue them, preview their QC, read and wait for them.

    The job store (SQLite in ``directory`` unless ``database_url`` names another) is opened on
    first use. ``fractal_server`` (else the embedded server in ``directory``) is only asked by
    :meth:`plan`, which fragments with ``n_fragmenter_workers`` processes and costs QC tasks of
    ``cores_per_task`` cores (None: every core of this machine). Submitting creates the directory;
    reading a directory that does not exist is an error unless ``create_directory``.
    """

    def __init__(
        self,
        directory: str | Path = DEFAULT_DIRECTORY,
        database_url: str | None = None,
        fractal_server: ServerConnection | None = None,
        server_settings: ServerSettings | None = None,
        n_fragmenter_workers: int = 1,
        cores_per_task: int | None = None,
        create_directory: bool = False,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.database_url = database_url
        self.fractal_server = fractal_server
        self.server_settings = server_settings
        self.n_fragmenter_workers = n_fragmenter_workers
        self.cores_per_task = cores_per_task if cores_per_task is not None else machine_cores()
        self.create_directory = create_directory
        self._store: JobStore | None = None

    # -- the job store -------------------------------------------------------------------------
    def open(self, create: bool = False) -> JobStore:
        """The job store, opened if it is not; ``create`` makes the directory first (to submit)."""
        if self._store is None:
            if create or self.create_directory:
                self.directory.mkdir(parents=True, exist_ok=True)
            self._store = JobStore.in_directory(self.directory, self.database_url)
        return self._store

    @property
    def store(self) -> JobStore:
        """The job store (opened on first use)."""
        return self.open()

    def close(self) -> None:
        """Close the job store; the next call opens it again."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, item: JobInput, workflow: WorkflowLike = None, name: str | None = None) -> str:
        """Queue a fit and return its job id: a job description from the factory, or a molecule
        (SMILES, file or ``Molecule``) with a workflow (factory, preset name or file)."""
        return submit_to_store(self.open(create=True), item, workflow, name)

    def submit_plan(self, plan: QCPlan) -> list[str | ExecutorError]:
        """Queue the jobs of a plan, in order (see :func:`submit_plan`)."""
        return submit_plan(self.open(create=True), plan)

    def submit_batch(
        self,
        sources: Sources,
        workflow: WorkflowLike = None,
        *,
        enumerate_stereo: bool = False,
        plan: bool = False,
        on_plan: Callable[[QCPlan], None] | None = None,
    ) -> list[Submission]:
        """Queue one job per molecule of ``sources``; a bad molecule is its error and does not
        stop the others. With ``plan`` the batch is fragmented here first (the cache is checked
        only on a server that runs already) and its plan given to ``on_plan`` before queueing."""
        items = load_batch(sources, enumerate_stereo)
        factory = resolve_workflow(workflow)
        store = self.open(create=True)
        queued: list[str | BespokeFractalError]
        if plan:
            batch_plan = self.plan(items, factory, start_server=False)
            if on_plan is not None:
                on_plan(batch_plan)
            queued = list(submit_plan(store, batch_plan))
        else:
            queued = []
            for item in items:
                try:
                    queued.append(submit_to_store(store, item, factory))
                except BespokeFractalError as exc:
                    queued.append(exc)
        return [
            Submission(item.name, error=str(job_id))
            if isinstance(job_id, Exception)
            else Submission(item.name, job_id=job_id)
            for item, job_id in zip(items, queued, strict=True)
        ]

    # -- planning ------------------------------------------------------------------------------
    def plan(
        self,
        molecules: Sources,
        workflow: WorkflowLike = None,
        enumerate_stereo: bool = False,
        start_server: bool = True,
    ) -> QCPlan:
        """Cost preview of fitting ``molecules``: nothing is submitted. Fragments them (with the
        directory's AM1 cache) and asks the server which drives exist; an embedded server that is
        not running is started for the lookup and stopped again (with ``start_server`` False the
        cache is then not checked)."""
        factory = resolve_workflow(workflow)
        with self._lookup_client(start_server) as (client, server):
            return plan_jobs(
                molecules,
                factory,
                client,
                cache_directory=self.directory / "am1-cache",
                n_workers=self.n_fragmenter_workers,
                server=server,
                cores_per_task=self.cores_per_task,
                enumerate_stereo=enumerate_stereo,
            )

    @contextmanager
    def _lookup_client(self, start_server: bool) -> Iterator[tuple[PortalClient | None, str]]:
        """A client of the server to look drives up on (None if there is none) and its label."""
        if self.fractal_server is not None:
            yield self.fractal_server.client(), self.fractal_server.address
            return
        server = EmbeddedServer(self.directory, self.server_settings)
        if not server.initialized:
            yield None, f"no embedded server in {self.directory} yet"
            return
        if not start_server and not server.status().running:
            yield None, f"the embedded server in {self.directory} is not running"
            return
        with temporary_server(self.directory, self.server_settings) as running:
            yield running.connection("submit").client(), f"embedded server in {self.directory}"

    # -- reading -------------------------------------------------------------------------------
    def retrieve(self, job_id: str | int) -> BespokeExecutorOutput:
        """A job's state, stages and (once it succeeded) results."""
        return self.store.output(job_id)

    def wait(
        self,
        job_id: str | int,
        frequency: float = 2.0,
        timeout: float | None = None,
        on_update: Callable[[BespokeExecutorOutput], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> BespokeExecutorOutput:
        """Block until the job has succeeded or errored and return its output. ``on_update`` is
        given the output each time it is read; ``check`` is called while the job runs and may
        raise to stop waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            output = self.retrieve(job_id)
            if on_update is not None:
                on_update(output)
            if output.status in FINAL:
                return output
            if check is not None:
                check()
            if deadline is not None and time.monotonic() > deadline:
                raise ExecutorError(
                    f"job {job_id} not finished after {timeout:.0f} s "
                    f"(stage {output.stage.type}: {output.stage.status})"
                )
            time.sleep(frequency)

    def watch(
        self, job_ids: Iterable[str], interval: float = 2.0, check: Callable[[], None] | None = None
    ) -> Iterator[list[BespokeExecutorOutput]]:
        """The jobs' outputs, read every ``interval`` seconds until every job has ended (that
        last reading included). ``check`` is called before each reading and may raise to stop."""
        job_ids = list(job_ids)
        while True:
            if check is not None:
                check()
            outputs = [self.retrieve(job_id) for job_id in job_ids]
            yield outputs
            if all(output.status in FINAL for output in outputs):
                return
            time.sleep(interval)

    def list(self, status: str | None = None) -> list[BespokeExecutorOutput]:
        """Every job (or those with ``status``), in id order."""
        return self.store.outputs(status)

    # -- combining -----------------------------------------------------------------------------
    def combine(
        self, jobs: Iterable[CombineInput], output_path: str | Path, scan: Scan = "changed"
    ) -> CombineReport:
        """One force field for a series: the initial force field plus every job's bespoke
        torsions, each molecule checked to keep its own torsion parameters (see
        :mod:`bespoke_fractal.optimization.combine`). ``jobs``: job ids of this directory, their
        outputs, or written ``force-field.offxml`` files with ``result.json`` beside them. Writes
        ``output_path`` and ``<stem>.combine.json`` only when every molecule checks out."""
        from bespoke_fractal.optimization.combine import combine_jobs

        _force_field, report = combine_jobs([self._combine_job(job) for job in jobs], output_path, scan)
        return report

    def _combine_job(self, job: CombineInput) -> CombineJob:
        from bespoke_fractal.optimization.combine import CombineJob

        if isinstance(job, Path) or (isinstance(job, str) and job.endswith(".offxml")):
            return combine_job_from_file(job)
        output = job if isinstance(job, BespokeExecutorOutput) else self.retrieve(job)
        try:
            schema = self.store.job_record(output.id).optimization_schema
        except BespokeFractalError:
            schema = None
        return CombineJob.from_output(output, schema)


def combine_job_from_file(path: str | Path) -> CombineJob:
    """A job to combine from its written ``force-field.offxml`` and the ``result.json`` beside it
    (``executor retrieve``); drives are then known by their QC profiles."""
    from bespoke_fractal.executor.output import RESULT_NAME
    from bespoke_fractal.optimization.combine import CombineError, CombineJob

    path = Path(path)
    result = path.with_name(RESULT_NAME)
    if not path.is_file():
        raise CombineError(f"{path}: no such force field file")
    if not result.is_file():
        raise CombineError(f"{path}: no {RESULT_NAME} beside it (write both with 'executor retrieve')")
    try:
        output = BespokeExecutorOutput.model_validate_json(result.read_text())
    except ValueError as exc:
        raise CombineError(f"{result}: not a job result ({str(exc).splitlines()[0]})") from None
    return CombineJob.from_output(output.model_copy(update={"offxml": path.read_text()}))
