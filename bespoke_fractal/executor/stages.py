"""The coordinator's stages: what each does with its jobs in one step.

Fragmentation and optimisation run in worker pools of their own (:class:`PoolStage`): one piece
of work per distinct key (a molecule and workflow; a job description and its QC records), which
several jobs may wait on, and a worker process that died sends its jobs' stage back to waiting,
up to ``max_worker_attempts`` runs. QC is :class:`~bespoke_fractal.executor.qc_stage.QCStage`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from abc import ABC, abstractmethod
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from bespoke_fractal.errors import BespokeFractalError, first_line
from bespoke_fractal.executor.config import BespokeWorkerConfig, CoordinatorSettings
from bespoke_fractal.executor.models import StageType
from bespoke_fractal.executor.store import JobRecord, JobStore
from bespoke_fractal.executor.workers import DRIVE_LIST, fragment_job, init_worker, optimize_job
from bespoke_fractal.optimization.forcebalance.run import summarize_log
from bespoke_fractal.optimization.stage import forcebalance_log
from bespoke_fractal.schema.fits import OptimizationResult
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.workflow.batch import SchemaOutcome

log = logging.getLogger(__name__)

Output = TypeVar("Output")


class CoordinatorStage(Protocol):
    """What the coordinator sequences: one step over the stage's jobs, a new server address,
    and stopping (work cut short is left to the next coordinator)."""

    def step(self) -> None: ...

    def reconnect(self, connection: ServerConnection) -> None: ...

    def close(self) -> None: ...


@dataclass
class InFlight:
    """Work in a pool and the jobs waiting for it."""

    future: Future[str]
    job_ids: list[int]
    log_file: Path | None = None
    note: str = ""


class PoolStage(ABC, Generic[Output]):
    """A stage run in a pool of worker processes, started when its first job asks for it."""

    stage: ClassVar[StageType]
    label: ClassVar[str]
    """The stage in log lines."""
    worker_died: ClassVar[str]
    """Why a job's stage is retried when the pool broke under it."""
    joined_note: ClassVar[str]
    """Note of a job that waits for the same work another job started."""

    def __init__(
        self, store: JobStore, n_workers: int, worker_config: BespokeWorkerConfig, max_worker_attempts: int
    ) -> None:
        self.store = store
        self.n_workers = n_workers
        self.worker_config = worker_config
        self.max_worker_attempts = max_worker_attempts
        self.in_flight: dict[str, InFlight] = {}
        self._pool: ProcessPoolExecutor | None = None

    # -- what each stage defines -----------------------------------------------------------
    @abstractmethod
    def work_key(self, job: JobRecord) -> str:
        """What the job's stage computes; jobs with the same key share one run."""

    @abstractmethod
    def reuse(self, job: JobRecord, key: str) -> bool:
        """Finish the job's stage from work already stored under ``key``; False if there is none."""

    @abstractmethod
    def submit(self, job: JobRecord, key: str) -> InFlight:
        """Start the work of ``key`` in the pool for ``job``."""

    @abstractmethod
    def read(self, output: str) -> Output:
        """The worker's JSON output as a model."""

    @abstractmethod
    def finish(self, key: str, work: InFlight, output: Output) -> None:
        """Record finished work on every job waiting for it."""

    @abstractmethod
    def error_message(self, key: str, exc: Exception) -> str:
        """The jobs' error line for work that raised ``exc``."""

    def progress(self, work: InFlight) -> None:
        """Note how running work is getting on (nothing by default)."""

    # -- shared --------------------------------------------------------------------------------
    def step(self) -> None:
        self.collect()
        self.start()

    def start(self) -> None:
        """Start the stage of every waiting job: reused, joined to running work, or submitted."""
        for job in self.store.job_records(self.stage, "waiting"):
            key = self.work_key(job)
            if self.reuse(job, key):
                continue
            if key in self.in_flight:
                self.in_flight[key].job_ids.append(job.id)
                self.store.start_stage(job.id, self.stage, note=self.joined_note)
                continue
            self.store.start_stage(job.id, self.stage)
            self.in_flight[key] = self.submit(job, key)
            log.info("job %s: %s started", job.id, self.label)

    def collect(self) -> None:
        """Record work that finished; a broken pool is replaced and its jobs retried."""
        for key, work in list(self.in_flight.items()):
            if not work.future.done():
                self.progress(work)
                continue
            del self.in_flight[key]
            try:
                output = self.read(work.future.result())
            except BrokenProcessPool:
                self._drop_pool()
                self._retry_or_fail(work.job_ids)
                continue
            except Exception as exc:  # noqa: BLE001 - reported as the jobs' error
                self.fail(work.job_ids, self.error_message(key, exc))
                continue
            self.finish(key, work, output)

    def fail(self, job_ids: list[int], error: str) -> None:
        for job_id in job_ids:
            self.store.finish_stage(job_id, self.stage, error=error)
            log.info("job %s: %s failed: %s", job_id, self.label, error)

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.n_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.worker_config.thread_environment(), os.getpid()),
            )
        return self._pool

    def reconnect(self, connection: ServerConnection) -> None:
        """Nothing: a pool stage that reads the server is given the connection with each run."""

    def close(self) -> None:
        """Stop the pool now; its work is forgotten (the store puts it back to waiting)."""
        self._drop_pool()
        self.in_flight.clear()

    def _drop_pool(self) -> None:
        if self._pool is not None:
            _terminate(self._pool)
        self._pool = None

    def _retry_or_fail(self, job_ids: list[int]) -> None:
        """A worker died under these jobs (killed, or out of memory): run the stage again,
        up to ``max_worker_attempts`` times in all."""
        for job_id in job_ids:
            attempts = self.store.stage_attempts(job_id, self.stage)
            if attempts < self.max_worker_attempts:
                self.store.retry_stage(
                    job_id, self.stage, note=f"{self.worker_died}; attempt {attempts + 1} next"
                )
                log.warning("job %s: %s during %s; retrying", job_id, self.worker_died, self.stage)
            else:
                error = f"{self.worker_died} {attempts} times (killed, or out of memory?)"
                self.store.finish_stage(job_id, self.stage, error=error)
                log.warning("job %s: %s: %s", job_id, self.stage, error)


class FragmentationStage(PoolStage[SchemaOutcome]):
    """Molecule and workflow -> job description, once per molecule and workflow."""

    stage = "fragmentation"
    label = "fragmentation"
    worker_died = "a fragmenter worker process died"
    joined_note = "waiting for the same fragmentation"

    def __init__(self, store: JobStore, settings: CoordinatorSettings, cache_directory: Path) -> None:
        super().__init__(
            store,
            settings.n_fragmenter_workers,
            settings.fragmenter_worker_config,
            settings.max_worker_attempts,
        )
        self.cache_directory = cache_directory

    def work_key(self, job: JobRecord) -> str:
        return job.schema_id

    def reuse(self, job: JobRecord, key: str) -> bool:
        earlier = self.store.find_schema(key)
        if earlier is None:
            return False
        self.store.start_stage(job.id, self.stage)
        self.store.finish_stage(
            job.id,
            self.stage,
            note="same molecule and workflow as an earlier job: reused",
            schema_json=earlier,
        )
        return True

    def submit(self, job: JobRecord, key: str) -> InFlight:
        future = self.pool().submit(
            fragment_job, job.workflow_json, job.smiles, job.name, str(self.cache_directory)
        )
        return InFlight(future=future, job_ids=[job.id])

    def read(self, output: str) -> SchemaOutcome:
        return SchemaOutcome.model_validate_json(output)

    def error_message(self, key: str, exc: Exception) -> str:
        log.error("fragmentation %s failed", key, exc_info=exc)
        return f"fragmenter worker failed: {first_line(exc)}"

    def finish(self, key: str, work: InFlight, output: SchemaOutcome) -> None:
        if not output.ok:
            self.fail(work.job_ids, output.error or "fragmentation failed")
            return
        fragmented = output.schema_.fragmentation
        note = (
            f"{len(fragmented.fragments)} fragment(s), {len(fragmented.unique_identities)} "
            f"torsion drive(s), AM1 run/reused {fragmented.am1_computed}/"
            f"{fragmented.am1_reused}, {output.seconds:.1f} s"
        )
        schema_json = output.schema_.model_dump_json()
        for job_id in work.job_ids:
            self.store.finish_stage(job_id, self.stage, note=note, schema_json=schema_json)
            log.info("job %s: fragmentation done", job_id)


class OptimizationStage(PoolStage[OptimizationResult]):
    """Job description + QC records -> fitted force field, once per job description and records."""

    stage = "optimization"
    label = "optimisation"
    worker_died = "an optimiser worker process died"
    joined_note = "waiting for the same fit"

    def __init__(
        self,
        store: JobStore,
        settings: CoordinatorSettings,
        connection: ServerConnection,
        fits_directory: Path,
    ) -> None:
        super().__init__(
            store,
            settings.n_optimizer_workers,
            settings.optimizer_worker_config,
            settings.max_worker_attempts,
        )
        self.connection = connection
        self.fits_directory = fits_directory
        self.timeout = settings.optimization_timeout
        self.keep_worse = settings.keep_worse

    def reconnect(self, connection: ServerConnection) -> None:
        self.connection = connection

    def work_key(self, job: JobRecord) -> str:
        return job.needed_fit_key()

    def reuse(self, job: JobRecord, key: str) -> bool:
        result = self.store.fit(key)
        if result is None:
            return False
        self.store.start_stage(job.id, self.stage)
        self._finish_job(job.id, key, result, reused=True)
        return True

    def submit(self, job: JobRecord, key: str) -> InFlight:
        output = self.fits_directory / key
        future = self.pool().submit(
            optimize_job,
            job.schema_text,
            DRIVE_LIST.dump_json(job.drives or []).decode(),
            self.connection,
            str(output),
            self.worker_config.cores,
            self.timeout,
            self.keep_worse,
        )
        log_file = forcebalance_log(output, job.optimization_schema.id)
        return InFlight(future=future, job_ids=[job.id], log_file=log_file)

    def read(self, output: str) -> OptimizationResult:
        return OptimizationResult.model_validate_json(output)

    def error_message(self, key: str, exc: Exception) -> str:
        if isinstance(exc, BespokeFractalError):
            return str(exc)
        log.error("fit %s failed", key, exc_info=exc)
        return f"optimiser failed: {type(exc).__name__}: {first_line(exc)}"

    def finish(self, key: str, work: InFlight, output: OptimizationResult) -> None:
        self.store.add_fit(key, output)
        for job_id in work.job_ids:
            self._finish_job(job_id, key, output, reused=False)

    def progress(self, work: InFlight) -> None:
        """ForceBalance's iteration and objective so far, as the stage note."""
        if work.log_file is None:
            return
        try:
            summary = summarize_log(work.log_file.read_text(errors="replace"))
        except OSError:
            return
        if not summary.objectives:
            return
        iteration, objective = summary.objectives[-1]
        note = f"ForceBalance iteration {iteration}, objective {objective:.4g}"
        if note != work.note:
            work.note = note
            for job_id in work.job_ids:
                self.store.set_note(job_id, self.stage, note)

    def _finish_job(self, job_id: int, key: str, result: OptimizationResult, reused: bool) -> None:
        note = (
            f"{'reused an identical earlier fit; ' if reused else ''}{result.iterations} iteration(s), "
            f"mean relaxed-scan RMSE {result.mean_rmse_before:.3f} -> {result.mean_rmse_after:.3f} "
            f"kcal/mol (frozen protocol {result.mean_frozen_rmse_before:.3f} -> "
            f"{result.mean_frozen_rmse_after:.3f})"
        )
        if result.unfitted:
            note += f"; {len(result.unfitted)} target(s) not fitted (no usable QC), initial parameters kept"
        error = None
        if not result.converged:
            if all(t.kept_initial for t in result.torsions):
                error = f"ForceBalance did not converge: {result.message}"
            else:
                note += f"; {result.message}"
        self.store.finish_stage(job_id, self.stage, error=error, note=note, fit_key=key)
        log.info("job %s: optimisation %s (%s)", job_id, "done" if not error else "failed", note)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now, killing work in progress (its stages are redone by the next coordinator)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
