"""Keeps the services an executor started alive: the embedded server and its compute managers.

A manager killed by the kernel, or a QCFractal server (or its PostgreSQL) that died, is started
again; QCFractal hands the tasks of a dead manager to the others once its heartbeats stop.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.manager import ManagerSettings
from bespoke_fractal.server import EmbeddedServer, ServerConnection

log = logging.getLogger(__name__)


class SupervisedServices(BaseModel):
    """What to keep running: the embedded server in ``directory`` and/or its managers."""

    model_config = ConfigDict(frozen=True)

    directory: Path
    server: bool = False
    managers: ManagerSettings | None = None
    interval: float = 10.0


class Supervisor:
    """Checks the services every ``interval`` seconds and restarts what is down."""

    def __init__(self, services: SupervisedServices) -> None:
        self.services = services
        self._last = 0.0
        self.restarts = 0

    def check(self) -> bool:
        """Restart what is down (at most once per interval); True if anything was restarted."""
        now = time.monotonic()
        if now - self._last < self.services.interval:
            return False
        self._last = now
        from bespoke_fractal.session import embedded_managers

        server = EmbeddedServer(self.services.directory)
        restarted = False
        try:
            if self.services.server and not server.status().running:
                log.warning("the embedded QCFractal server is down; starting it again")
                server.start()
                restarted = True
            if self.services.managers is not None:
                managers = embedded_managers(server, self.services.managers)
                running = sum(m.running for m in managers.status())
                if running < self.services.managers.n_workers:
                    log.warning(
                        "%d of %d compute managers running; starting the others again",
                        running,
                        self.services.managers.n_workers,
                    )
                    managers.start()
                    restarted = True
        except BespokeFractalError as exc:
            log.warning("could not restart a service: %s", exc)
        self.restarts += restarted
        return restarted

    def reconnect(self, connection: ServerConnection) -> ServerConnection:
        """``connection`` to the embedded server at its address now (a restart moves it off a
        port taken meanwhile); unchanged when the server is not supervised."""
        if not self.services.server:
            return connection
        return connection.model_copy(update={"address": EmbeddedServer(self.services.directory).address})
