"""The coordinator: moves every job through its stages, one committed transition at a time.

Fragmentation and optimisation run in the coordinator's own worker pools (one pool per stage, so
neither blocks the other); QC runs on the QCFractal server's compute managers and is only
submitted and polled from here. All state is in the job store, so a coordinator that dies is
replaced by the next one on the same directory without losing or repeating finished work:
fragmentations and fits left running are redone, QC drives are found again on the server by
their record ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.errors import BespokeFractalError, ServerError, first_line
from bespoke_fractal.executor.config import BespokeWorkerConfig
from bespoke_fractal.executor.drives import submit_targets
from bespoke_fractal.executor.models import QCProgress, StageType
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.executor.supervisor import Supervisor
from bespoke_fractal.executor.workers import DRIVE_LIST, fragment_job, init_worker, optimize_job
from bespoke_fractal.optimization.forcebalance.run import LOG_NAME as FORCEBALANCE_LOG
from bespoke_fractal.optimization.forcebalance.run import summarize_log
from bespoke_fractal.optimization.stage import MIN_GRID_COVERAGE
from bespoke_fractal.qc.availability import ManagerPrograms, active_managers, missing_program
from bespoke_fractal.qc.torsiondrive import DriveMonitor, TorsionDriveStage
from bespoke_fractal.schema.fits import OptimizationResult
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.server.records import FINISHED
from bespoke_fractal.workflow.batch import SchemaOutcome

log = logging.getLogger(__name__)

MANAGER_CHECK_INTERVAL = 30.0  # seconds between looks at which programs the managers have


class CoordinatorSettings(BaseModel):
    """Worker pools and polling of one coordinator."""

    model_config = ConfigDict(frozen=True)

    n_fragmenter_workers: int = Field(1, ge=1)
    fragmenter_worker_config: BespokeWorkerConfig = BespokeWorkerConfig(n_cores=1)
    n_optimizer_workers: int = Field(1, ge=1)
    optimizer_worker_config: BespokeWorkerConfig = BespokeWorkerConfig(n_cores=1)
    poll_interval: float = Field(2.0, gt=0, description="seconds between coordinator steps")
    max_resets: int = Field(2, ge=0, description="resets of an errored QC drive before it fails")
    max_worker_attempts: int = Field(3, ge=1, description="runs of a stage whose worker process died")
    qc_stall_seconds: float = Field(
        120.0,
        gt=0,
        description="seconds a drive may sit running with no service state before it is restarted",
    )
    optimization_timeout: float = Field(3600.0, gt=0, description="seconds one fit may take")
    keep_worse: bool = Field(False, description="keep fitted torsions that the fit made worse")


@dataclass
class RunningFit:
    """A fit in the optimiser pool and the jobs waiting for it."""

    future: Future
    job_ids: list[int]
    log_file: Path
    note: str = ""


def fit_key(schema_json: str, record_ids: list[int]) -> str:
    """Identity of a fit: the job description and the QC records it is fitted to."""
    text = json.dumps([json.loads(schema_json), sorted(record_ids)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Coordinator:
    """One step at a time: start, collect and record the work of every job."""

    def __init__(
        self,
        directory: Path,
        store: JobStore,
        connection: ServerConnection,
        settings: CoordinatorSettings | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.store = store
        self.connection = connection
        self.settings = settings or CoordinatorSettings()
        self.supervisor = supervisor
        self.cache_directory = self.directory / "am1-cache"
        self.fits_directory = self.directory / "fits"
        self._stage: TorsionDriveStage | None = None
        self._monitor: DriveMonitor | None = None
        self._fragmenters: ProcessPoolExecutor | None = None
        self._optimizers: ProcessPoolExecutor | None = None
        # in-flight work, keyed by what it computes; several jobs may wait on one future
        self._fragmentations: dict[str, tuple[Future, list[int]]] = {}
        self._fits: dict[str, RunningFit] = {}
        self._server_down = False
        self._managers: list[ManagerPrograms] | None = None
        self._managers_read = 0.0

    # -- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> Coordinator:
        self.cache_directory.mkdir(parents=True, exist_ok=True)
        self.fits_directory.mkdir(parents=True, exist_ok=True)
        resumed = self.store.reset_interrupted()
        if resumed:
            log.info("resuming interrupted fragmentations/fits of jobs %s", sorted(set(resumed)))
        return self

    def __exit__(self, *_exc) -> None:
        for pool in (self._fragmenters, self._optimizers):
            if pool is not None:
                _terminate(pool)
        self._fragmenters = self._optimizers = None
        self._fragmentations.clear()
        self._fits.clear()
        # work cut short goes back to waiting for the next coordinator
        self.store.reset_interrupted()

    def loop(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; an unexpected error in a step is logged, not fatal."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the coordinator must outlive any one bad step
                log.exception("coordinator step failed; retrying")
            stop.wait(self.settings.poll_interval)

    def step(self) -> None:
        """One pass over every stage (and over the services, when it supervises them)."""
        if self.supervisor is not None and self.supervisor.check():
            self._stage = None  # a restarted server: log in again, at its address now
            if self.supervisor.services.server:
                from bespoke_fractal.server import EmbeddedServer

                address = EmbeddedServer(self.directory).address  # a port taken meanwhile is changed
                self.connection = self.connection.model_copy(update={"address": address})
        self._collect_fragmentations()
        self._start_fragmentations()
        try:
            self._submit_qc()
            self._poll_qc()
            if self._server_down:
                log.info("QCFractal server reachable again")
                self._server_down = False
        except Exception as exc:
            if not _server_trouble(exc):
                raise
            if not self._server_down:
                log.warning("QC stage paused, the server is unavailable: %s", first_line(exc))
            self._server_down = True
            self._stage = None
        self._collect_fits()
        self._start_fits()

    # -- pools ---------------------------------------------------------------------------------
    def _pool(self, which: str) -> ProcessPoolExecutor:
        s = self.settings
        if which == "fragmentation":
            if self._fragmenters is None:
                self._fragmenters = _new_pool(s.n_fragmenter_workers, s.fragmenter_worker_config)
            return self._fragmenters
        if self._optimizers is None:
            self._optimizers = _new_pool(s.n_optimizer_workers, s.optimizer_worker_config)
        return self._optimizers

    def _drop_broken(self, which: str) -> None:
        pool = self._fragmenters if which == "fragmentation" else self._optimizers
        if pool is not None:
            _terminate(pool)
        if which == "fragmentation":
            self._fragmenters = None
        else:
            self._optimizers = None

    def _client_stage(self) -> TorsionDriveStage:
        if self._stage is None:
            self._stage = TorsionDriveStage(self.connection.client())
            self._monitor = None
        if self._monitor is None:
            self._monitor = DriveMonitor(
                self._stage.client, self.settings.max_resets, stall_seconds=self.settings.qc_stall_seconds
            )
            self._monitor.on_note = log.info
        return self._stage

    # -- fragmentation -------------------------------------------------------------------------
    def _start_fragmentations(self) -> None:
        for job_id in self.store.jobs_in_stage("fragmentation", "waiting"):
            with self.store.session() as session:
                job = self.store.job(session, job_id)
                schema_id, workflow, smiles, name = job.schema_id, job.workflow, job.smiles, job.name
            earlier = self.store.find_schema(schema_id)
            if earlier is not None:
                self.store.start_stage(job_id, "fragmentation")
                self.store.finish_stage(
                    job_id,
                    "fragmentation",
                    note="same molecule and workflow as an earlier job: reused",
                    schema_json=earlier,
                )
                continue
            if schema_id in self._fragmentations:
                self._fragmentations[schema_id][1].append(job_id)
                self.store.start_stage(job_id, "fragmentation", note="waiting for the same fragmentation")
                continue
            self.store.start_stage(job_id, "fragmentation")
            future = self._pool("fragmentation").submit(
                fragment_job, workflow, smiles, name, str(self.cache_directory)
            )
            self._fragmentations[schema_id] = (future, [job_id])
            log.info("job %s: fragmentation started", job_id)

    def _collect_fragmentations(self) -> None:
        for schema_id, (future, job_ids) in list(self._fragmentations.items()):
            if not future.done():
                continue
            del self._fragmentations[schema_id]
            try:
                outcome = SchemaOutcome.model_validate_json(future.result())
            except BrokenProcessPool:
                self._drop_broken("fragmentation")
                self._retry_or_fail(job_ids, "fragmentation", "a fragmenter worker process died")
                continue
            except Exception as exc:  # noqa: BLE001 - reported as the job's error
                log.error("fragmentation %s failed", schema_id, exc_info=exc)
                outcome = SchemaOutcome(name="", error=f"fragmenter worker failed: {first_line(exc)}")
            for job_id in job_ids:
                if outcome.ok:
                    fragmented = outcome.schema_.fragmentation
                    note = (
                        f"{len(fragmented.fragments)} fragment(s), {len(fragmented.unique_identities)} "
                        f"torsion drive(s), AM1 run/reused {fragmented.am1_computed}/"
                        f"{fragmented.am1_reused}, {outcome.seconds:.1f} s"
                    )
                    self.store.finish_stage(
                        job_id, "fragmentation", note=note, schema_json=outcome.schema_.model_dump_json()
                    )
                else:
                    self.store.finish_stage(job_id, "fragmentation", error=outcome.error)
                log.info("job %s: fragmentation %s", job_id, "done" if outcome.ok else outcome.error)

    def _retry_or_fail(self, job_ids: list[int], stage: StageType, reason: str) -> None:
        """A worker died under these jobs (killed, or out of memory): run the stage again,
        up to ``max_worker_attempts`` times in all."""
        for job_id in job_ids:
            attempts = self.store.stage_attempts(job_id, stage)
            if attempts < self.settings.max_worker_attempts:
                self.store.retry_stage(job_id, stage, note=f"{reason}; attempt {attempts + 1} next")
                log.warning("job %s: %s during %s; retrying", job_id, reason, stage)
            else:
                error = f"{reason} {attempts} times (killed, or out of memory?)"
                self.store.finish_stage(job_id, stage, error=error)
                log.warning("job %s: %s: %s", job_id, stage, error)

    # -- QC ------------------------------------------------------------------------------------
    def _submit_qc(self) -> None:
        waiting = self.store.jobs_in_stage("qc-generation", "waiting")
        # a coordinator killed between marking QC running and storing the drives left these
        waiting += [
            job_id
            for job_id in self.store.jobs_in_stage("qc-generation", "running")
            if self._job_fields(job_id)["drives"] is None
        ]
        if not waiting:
            return
        schemas = {
            job_id: BespokeOptimizationSchema.model_validate_json(self._job_fields(job_id)["schema_json"])
            for job_id in waiting
        }
        stage = self._client_stage()
        try:
            drives = submit_targets(stage, schemas.values())
        except ServerError:
            raise
        except Exception:  # noqa: BLE001 - find the job that cannot be submitted, keep the rest
            for job_id, schema in schemas.items():
                try:
                    self._record_drives(job_id, schema, submit_targets(stage, [schema]))
                except ServerError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self.store.start_stage(job_id, "qc-generation")
                    self.store.finish_stage(
                        job_id, "qc-generation", error=f"could not submit: {first_line(exc)}"
                    )
            return
        for job_id, schema in schemas.items():
            self._record_drives(job_id, schema, drives)

    def _record_drives(self, job_id: int, schema: BespokeOptimizationSchema, drives) -> None:
        by_key = {(d.dataset_name, d.entry_name): d for d in drives}
        dataset = schema.qc_spec.dataset_name
        keys = dict.fromkeys((dataset, t.identity.key) for t in schema.targets)
        mine = [by_key[key] for key in keys]
        note = ""
        if schema.drive_parent:
            # the parent's drives are waited for and are part of the fit key; one that could not
            # be submitted is left out (the parent is then not scored on that bond)
            parent_keys = [(dataset, identity.key) for _i, _d, identity in schema.parent_drives()]
            parents = [by_key[key] for key in dict.fromkeys(parent_keys) if key in by_key and key not in keys]
            mine += parents
            note = f" ({len(parents)} of the whole parent"
            missing = len(set(parent_keys) - set(by_key))
            note += f", {missing} could not be submitted)" if missing else ")"
        progress = QCProgress(
            total=len(mine), new=sum(d.new_entry for d in mine), record_ids=[d.record_id for d in mine]
        )
        self.store.start_stage(
            job_id,
            "qc-generation",
            note=f"{progress.total} drive(s){note}, {progress.total - progress.new} already on the server",
        )
        self.store.set_fields(
            job_id,
            drives=DRIVE_LIST.dump_json(mine).decode(),
            qc_progress=progress.model_dump_json(),
        )
        log.info("job %s: %d QC drive(s) submitted (%d new)", job_id, progress.total, progress.new)

    def _poll_qc(self) -> None:
        running = {}
        for job_id in self.store.jobs_in_stage("qc-generation", "running"):
            fields = self._job_fields(job_id)
            if fields["drives"] is not None:
                running[job_id] = (fields, DRIVE_LIST.validate_json(fields["drives"]))
        if not running:
            return
        self._client_stage()
        ids = sorted({d.record_id for _, drives in running.values() for d in drives})
        statuses = self._monitor.poll(ids)
        for job_id, (fields, drives) in running.items():
            progress = QCProgress.model_validate_json(fields["qc_progress"])
            mine = [statuses.get(d.record_id, "waiting") for d in drives]
            # a drive waits on managers with its program, whether its record is waiting or running
            unfinished = sorted(
                {d.spec.program for d, s in zip(drives, mine, strict=True) if s not in FINISHED}
            )
            updated = progress.model_copy(
                update={
                    "complete": mine.count("complete"),
                    "running": mine.count("running"),
                    "waiting": sum(s not in FINISHED and s != "running" for s in mine),
                    "errored": sum(s in FINISHED and s != "complete" for s in mine),
                    "blocked": self._blocked(unfinished),
                }
            )
            if updated.blocked and updated.blocked != progress.blocked:
                log.warning("job %s: %s", job_id, updated.blocked)
            finished = all(s in FINISHED for s in mine)
            if updated != progress and not finished:
                self.store.set_fields(job_id, qc_progress=updated.model_dump_json())
            if not finished:
                continue
            failed = [d for d, s in zip(drives, mine, strict=True) if s != "complete"]
            if not failed:
                self.store.finish_stage(job_id, "qc-generation", qc_progress=updated.model_dump_json())
                log.info("job %s: QC complete", job_id)
                continue
            # drives of the whole parent (drive_parent) only score the fit: one that failed is a
            # note, and only the fragment drives count toward the usable ones
            schema = BespokeOptimizationSchema.model_validate_json(fields["schema_json"])
            fragment_keys = {t.identity.key for t in schema.targets}
            parent_failed = [d for d in failed if d.entry_name not in fragment_keys]
            failed = [d for d in failed if d.entry_name in fragment_keys]
            fragment_drives = [d for d in drives if d.entry_name in fragment_keys]
            parent_note = ""
            if parent_failed:
                first = parent_failed[0].record_id
                reason = self._monitor.errors.get(first) or statuses.get(first, "not complete")
                parent_note = (
                    f"{len(parent_failed)} drive(s) of the whole parent failed (record {first}: "
                    f"{reason}); the parent is not scored on {'them' if len(parent_failed) > 1 else 'it'}"
                )
            if not failed:
                self.store.finish_stage(
                    job_id, "qc-generation", note=parent_note or None, qc_progress=updated.model_dump_json()
                )
                log.warning("job %s: QC complete; %s", job_id, parent_note)
                continue
            # a drive that failed part-way may still be fitted to (MIN_GRID_COVERAGE of its grid)
            results = self._stage.results(failed, errors=self._monitor.errors)
            lines = [f"record {r.record_id} ({_done(r)} grid points done): {r.error}" for r in results]
            usable = len(fragment_drives) - len(failed) + sum(r.usable(MIN_GRID_COVERAGE) for r in results)
            summary = f"{len(failed)} of {len(fragment_drives)} torsion drive(s) failed; {lines[0]}"
            if parent_note:
                summary += f"; {parent_note}"
            if usable:
                self.store.finish_stage(
                    job_id,
                    "qc-generation",
                    note=f"{summary}; fitting the {usable} usable drive(s)",
                    qc_progress=updated.model_dump_json(),
                )
            else:
                self.store.finish_stage(
                    job_id, "qc-generation", error=summary, qc_progress=updated.model_dump_json()
                )
            log.warning("job %s: %s", job_id, summary)

    def _blocked(self, programs: list[str]) -> str | None:
        """Why drives of these programs cannot start: no connected manager runs them."""
        if not programs:
            return None
        now = time.monotonic()
        if self._managers is None or now - self._managers_read > MANAGER_CHECK_INTERVAL:
            try:
                self._managers = active_managers(self._stage.client)
            except Exception as exc:  # noqa: BLE001 - an account that may not read managers: no check
                log.debug("cannot list compute managers: %s", first_line(exc))
                self._managers = None
                return None
            self._managers_read = now
        return next((m for p in programs if (m := missing_program(self._managers, p))), None)

    # -- optimisation --------------------------------------------------------------------------
    def _start_fits(self) -> None:
        for job_id in self.store.jobs_in_stage("optimization", "waiting"):
            fields = self._job_fields(job_id)
            record_ids = [d.record_id for d in DRIVE_LIST.validate_json(fields["drives"])]
            key = fit_key(fields["schema_json"], record_ids)
            if self.store.fit(key) is not None:
                self.store.start_stage(job_id, "optimization")
                self._finish_fit(job_id, key, reused=True)
                continue
            if key in self._fits:
                self._fits[key].job_ids.append(job_id)
                self.store.start_stage(job_id, "optimization", note="waiting for the same fit")
                continue
            self.store.start_stage(job_id, "optimization")
            s = self.settings
            output = self.fits_directory / key
            future = self._pool("optimization").submit(
                optimize_job,
                fields["schema_json"],
                fields["drives"],
                self.connection,
                str(output),
                s.optimizer_worker_config.cores,
                s.optimization_timeout,
                s.keep_worse,
            )
            schema_id = BespokeOptimizationSchema.model_validate_json(fields["schema_json"]).id
            log_file = output / schema_id / "forcebalance" / FORCEBALANCE_LOG
            self._fits[key] = RunningFit(future=future, job_ids=[job_id], log_file=log_file)
            log.info("job %s: optimisation started", job_id)

    def _collect_fits(self) -> None:
        for key, fit in list(self._fits.items()):
            if not fit.future.done():
                self._note_fit_progress(fit)
                continue
            del self._fits[key]
            try:
                result = OptimizationResult.model_validate_json(fit.future.result())
            except BrokenProcessPool:
                self._drop_broken("optimization")
                self._retry_or_fail(fit.job_ids, "optimization", "an optimiser worker process died")
                continue
            except BespokeFractalError as exc:
                error = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported as the job's error
                log.error("fit %s failed", key, exc_info=exc)
                error = f"optimiser failed: {type(exc).__name__}: {first_line(exc)}"
            else:
                self.store.add_fit(key, result)
                for job_id in fit.job_ids:
                    self._finish_fit(job_id, key, reused=False)
                continue
            for job_id in fit.job_ids:
                self.store.finish_stage(job_id, "optimization", error=error)
                log.info("job %s: optimisation failed: %s", job_id, error)

    def _note_fit_progress(self, fit: RunningFit) -> None:
        """ForceBalance's iteration and objective so far, as the stage note."""
        try:
            summary = summarize_log(fit.log_file.read_text(errors="replace"))
        except OSError:
            return
        if not summary.objectives:
            return
        iteration, objective = summary.objectives[-1]
        note = f"ForceBalance iteration {iteration}, objective {objective:.4g}"
        if note != fit.note:
            fit.note = note
            for job_id in fit.job_ids:
                self.store.set_note(job_id, "optimization", note)

    def _finish_fit(self, job_id: int, key: str, reused: bool) -> None:
        result = self.store.fit(key)
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
        self.store.finish_stage(job_id, "optimization", error=error, note=note, fit_key=key)
        log.info("job %s: optimisation %s (%s)", job_id, "done" if not error else "failed", note)

    # -- helpers -------------------------------------------------------------------------------
    def _job_fields(self, job_id: int) -> dict[str, str | None]:
        with self.store.session() as session:
            job = self.store.job(session, job_id)
            return {"schema_json": job.schema_json, "drives": job.drives, "qc_progress": job.qc_progress}


def _server_trouble(exc: BaseException) -> bool:
    """The server is down, restarting or without its database: wait, do not fail any job."""
    from qcportal.client_base import PortalRequestError

    if isinstance(exc, ServerError | ConnectionError):
        return True
    return isinstance(exc, PortalRequestError) and getattr(exc, "status_code", 0) >= 500


def _done(result) -> str:
    return f"{len(result.grid)}/{len(result.grid) + len(result.missing_angles)}"


def _new_pool(n_workers: int, config: BespokeWorkerConfig) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(config.thread_environment(), os.getpid()),
    )


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
