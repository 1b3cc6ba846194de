"""The coordinator's QC stage: submit the drives of fragmented jobs to QCFractal and poll them.

The drives run on the server's compute managers; the job store keeps each job's drives (record
ids), so a new coordinator finds them again. While the server is down or restarting the stage
pauses; no job fails for it.
"""

from __future__ import annotations

import logging
import time

from bespoke_fractal.errors import ServerError, first_line
from bespoke_fractal.executor.config import CoordinatorSettings
from bespoke_fractal.executor.drives import submit_targets
from bespoke_fractal.executor.models import QCProgress
from bespoke_fractal.executor.store import JobRecord, JobStore
from bespoke_fractal.optimization.stage import MIN_GRID_COVERAGE
from bespoke_fractal.qc.availability import ManagerPrograms, active_managers, missing_program
from bespoke_fractal.qc.torsiondrive import DriveMonitor, TorsionDriveStage
from bespoke_fractal.schema.drives import TorsionDrive, TorsionDriveResult
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.server.records import FINISHED

log = logging.getLogger(__name__)

MANAGER_CHECK_INTERVAL = 30.0  # seconds between looks at which programs the managers have


class QCStage:
    """Torsion drives of every job on one QCFractal server."""

    stage = "qc-generation"

    def __init__(self, store: JobStore, connection: ServerConnection, settings: CoordinatorSettings) -> None:
        self.store = store
        self.connection = connection
        self.max_resets = settings.max_resets
        self.stall_seconds = settings.qc_stall_seconds
        self.drive_stage: TorsionDriveStage | None = None
        self.monitor: DriveMonitor | None = None
        self.server_down = False
        self._managers: list[ManagerPrograms] | None = None
        self._managers_read = 0.0

    def step(self) -> None:
        """Submit, then poll; a server that is unavailable pauses the stage."""
        try:
            self.submit()
            self.poll()
            if self.server_down:
                log.info("QCFractal server reachable again")
                self.server_down = False
        except Exception as exc:
            if not server_trouble(exc):
                raise
            if not self.server_down:
                log.warning("QC stage paused, the server is unavailable: %s", first_line(exc))
            self.server_down = True
            self.drive_stage = None

    def reconnect(self, connection: ServerConnection) -> None:
        """Log in again (at ``connection``'s address) before the next submission or poll."""
        self.connection = connection
        self.drive_stage = None

    def close(self) -> None:
        """Nothing to stop: the drives run on the server."""

    def client_stage(self) -> TorsionDriveStage:
        """The drive stage on the server, logged in once (and the monitor of its records)."""
        if self.drive_stage is None:
            self.drive_stage = TorsionDriveStage(self.connection.client())
            self.monitor = None
        if self.monitor is None:
            self.monitor = DriveMonitor(
                self.drive_stage.client, self.max_resets, stall_seconds=self.stall_seconds
            )
            self.monitor.on_note = log.info
        return self.drive_stage

    # -- submission ----------------------------------------------------------------------------
    def submit(self) -> None:
        """Submit the drives of every job waiting for QC, all jobs at once where possible."""
        waiting = self.store.job_records(self.stage, "waiting")
        # a coordinator killed between marking QC running and storing the drives left these
        waiting += [job for job in self.store.job_records(self.stage, "running") if job.drives is None]
        if not waiting:
            return
        schemas = {job.id: job.optimization_schema for job in waiting}
        stage = self.client_stage()
        try:
            drives = submit_targets(stage, schemas.values())
        except ServerError:
            raise
        except Exception:  # noqa: BLE001 - find the job that cannot be submitted, keep the rest
            for job_id, schema in schemas.items():
                try:
                    self.record_drives(job_id, schema, submit_targets(stage, [schema]))
                except ServerError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self.store.start_stage(job_id, self.stage)
                    self.store.finish_stage(job_id, self.stage, error=f"could not submit: {first_line(exc)}")
            return
        for job_id, schema in schemas.items():
            self.record_drives(job_id, schema, drives)

    def record_drives(
        self, job_id: int, schema: BespokeOptimizationSchema, drives: list[TorsionDrive]
    ) -> None:
        """Store the drives of this job (its targets' and, with ``drive_parent``, the parent's)."""
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
            self.stage,
            note=f"{progress.total} drive(s){note}, {progress.total - progress.new} already on the server",
        )
        self.store.set_drives(job_id, mine, progress)
        log.info("job %s: %d QC drive(s) submitted (%d new)", job_id, progress.total, progress.new)

    # -- polling -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Update every running job's QC progress; finish the jobs whose drives all finished."""
        running = [job for job in self.store.job_records(self.stage, "running") if job.drives is not None]
        if not running:
            return
        self.client_stage()
        ids = sorted({record_id for job in running for record_id in job.record_ids})
        statuses = self.monitor.poll(ids)
        for job in running:
            self._update(job, statuses)

    def _update(self, job: JobRecord, statuses: dict[int, str]) -> None:
        drives = job.drives or []
        progress = job.qc_progress
        mine = [statuses.get(d.record_id, "waiting") for d in drives]
        # a drive waits on managers with its program, whether its record is waiting or running
        unfinished = sorted({d.spec.program for d, s in zip(drives, mine, strict=True) if s not in FINISHED})
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
            log.warning("job %s: %s", job.id, updated.blocked)
        finished = all(s in FINISHED for s in mine)
        if not finished:
            if updated != progress:
                self.store.set_qc_progress(job.id, updated)
            return
        failed = [d for d, s in zip(drives, mine, strict=True) if s != "complete"]
        if not failed:
            self.store.finish_stage(job.id, self.stage, qc_progress=updated)
            log.info("job %s: QC complete", job.id)
            return
        # drives of the whole parent (drive_parent) only score the fit: one that failed is a
        # note, and only the fragment drives count toward the usable ones
        fragment_keys = {t.identity.key for t in job.optimization_schema.targets}
        parent_failed = [d for d in failed if d.entry_name not in fragment_keys]
        failed = [d for d in failed if d.entry_name in fragment_keys]
        fragment_drives = [d for d in drives if d.entry_name in fragment_keys]
        parent_note = ""
        if parent_failed:
            first = parent_failed[0].record_id
            reason = self.monitor.errors.get(first) or statuses.get(first, "not complete")
            parent_note = (
                f"{len(parent_failed)} drive(s) of the whole parent failed (record {first}: "
                f"{reason}); the parent is not scored on {'them' if len(parent_failed) > 1 else 'it'}"
            )
        if not failed:
            self.store.finish_stage(job.id, self.stage, note=parent_note or None, qc_progress=updated)
            log.warning("job %s: QC complete; %s", job.id, parent_note)
            return
        # a drive that failed part-way may still be fitted to (MIN_GRID_COVERAGE of its grid)
        results = self.drive_stage.results(failed, errors=self.monitor.errors)
        lines = [f"record {r.record_id} ({_grid_done(r)} grid points done): {r.error}" for r in results]
        usable = len(fragment_drives) - len(failed) + sum(r.usable(MIN_GRID_COVERAGE) for r in results)
        summary = f"{len(failed)} of {len(fragment_drives)} torsion drive(s) failed; {lines[0]}"
        if parent_note:
            summary += f"; {parent_note}"
        if usable:
            note = f"{summary}; fitting the {usable} usable drive(s)"
            self.store.finish_stage(job.id, self.stage, note=note, qc_progress=updated)
        else:
            self.store.finish_stage(job.id, self.stage, error=summary, qc_progress=updated)
        log.warning("job %s: %s", job.id, summary)

    def _blocked(self, programs: list[str]) -> str | None:
        """Why drives of these programs cannot start: no connected manager runs them."""
        if not programs:
            return None
        now = time.monotonic()
        if self._managers is None or now - self._managers_read > MANAGER_CHECK_INTERVAL:
            try:
                self._managers = active_managers(self.drive_stage.client)
            except Exception as exc:  # noqa: BLE001 - an account that may not read managers: no check
                log.debug("cannot list compute managers: %s", first_line(exc))
                self._managers = None
                return None
            self._managers_read = now
        return next((m for p in programs if (m := missing_program(self._managers, p))), None)


def server_trouble(exc: BaseException) -> bool:
    """The server is down, restarting or without its database: wait, do not fail any job."""
    from qcportal.client_base import PortalRequestError

    if isinstance(exc, ServerError | ConnectionError):
        return True
    return isinstance(exc, PortalRequestError) and getattr(exc, "status_code", 0) >= 500


def _grid_done(result: TorsionDriveResult) -> str:
    return f"{len(result.grid)}/{len(result.grid) + len(result.missing_angles)}"
