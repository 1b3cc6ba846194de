"""The coordinator: moves every job through its stages, one committed transition at a time.

Fragmentation and optimisation run in the coordinator's own worker pools (one pool per stage, so
neither blocks the other); QC runs on the QCFractal server's compute managers and is only
submitted and polled from here (see :mod:`~bespoke_fractal.executor.stages` and
:mod:`~bespoke_fractal.executor.qc_stage`). All state is in the job store, so a coordinator that
dies is replaced by the next one on the same directory without losing or repeating finished
work: fragmentations and fits left running are redone, QC drives are found again on the server
by their record ids.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from bespoke_fractal.executor.config import CoordinatorSettings
from bespoke_fractal.executor.qc_stage import QCStage
from bespoke_fractal.executor.stages import CoordinatorStage, FragmentationStage, OptimizationStage
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.executor.supervisor import Supervisor
from bespoke_fractal.server import ServerConnection

__all__ = ["Coordinator", "CoordinatorSettings"]

log = logging.getLogger(__name__)


class Coordinator:
    """One step at a time: fragmentation, QC, then optimisation, each on all of its jobs.

    ``qc`` replaces the QC stage on the server (any object with the stage methods, e.g. one that
    stands in for the server in a test)."""

    def __init__(
        self,
        directory: Path,
        store: JobStore,
        connection: ServerConnection,
        settings: CoordinatorSettings | None = None,
        supervisor: Supervisor | None = None,
        qc: CoordinatorStage | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.store = store
        self.connection = connection
        self.settings = settings or CoordinatorSettings()
        self.supervisor = supervisor
        self.cache_directory = self.directory / "am1-cache"
        self.fits_directory = self.directory / "fits"
        self.fragmentation = FragmentationStage(store, self.settings, self.cache_directory)
        self.qc = qc if qc is not None else QCStage(store, connection, self.settings)
        self.optimization = OptimizationStage(store, self.settings, connection, self.fits_directory)
        self.stages: tuple[CoordinatorStage, ...] = (self.fragmentation, self.qc, self.optimization)

    def __enter__(self) -> Coordinator:
        self.cache_directory.mkdir(parents=True, exist_ok=True)
        self.fits_directory.mkdir(parents=True, exist_ok=True)
        resumed = self.store.reset_interrupted()
        if resumed:
            log.info("resuming interrupted fragmentations/fits of jobs %s", sorted(set(resumed)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for stage in self.stages:
            stage.close()
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
        """One pass over every stage (after restarting the services, when it supervises them)."""
        if self.supervisor is not None and self.supervisor.check():
            # a restarted server: log in again, at its address now
            self.connection = self.supervisor.reconnect(self.connection)
            for stage in self.stages:
                stage.reconnect(self.connection)
        for stage in self.stages:
            stage.step()
