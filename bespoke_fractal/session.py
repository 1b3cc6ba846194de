"""Which server to talk to: the embedded one in a directory (started if needed) or an external one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bespoke_fractal.errors import ServerError
from bespoke_fractal.manager import LocalManagers, ManagerSettings
from bespoke_fractal.server import EmbeddedServer, ServerConnection, ServerSettings
from bespoke_fractal.server.embedded import Role


def external_connection(server_file: str | Path | None, use_environment: bool) -> ServerConnection | None:
    """An external server from a credentials file or ``QCPORTAL_*`` variables; None for embedded."""
    if server_file:
        return ServerConnection.from_file(server_file)
    if use_environment:
        return ServerConnection.from_environment()
    return None


def fractal_connection(address: str | None, credentials_file: str | Path | None) -> ServerConnection | None:
    """An external server named by ``--fractal-address``/``--fractal-credentials`` (the file
    may hold the address too); without a file the account comes from ``QCPORTAL_USERNAME`` /
    ``QCPORTAL_PASSWORD``. None when neither is given: the embedded server."""
    if credentials_file:
        return ServerConnection.from_file(credentials_file, address=address)
    if address:
        return ServerConnection.from_environment(address=address)
    return None


def embedded_managers(server: EmbeddedServer, settings: ManagerSettings | None = None) -> LocalManagers:
    """The local managers of an embedded server, logging in with its compute account."""
    return LocalManagers(server.directory / "managers", server.connection("compute"), settings)


def ensure_embedded(
    directory: str | Path, manager_settings: ManagerSettings | None = None, role: Role = "submit"
) -> ServerConnection:
    """Start the embedded server in ``directory`` and its managers if they are not running."""
    server = EmbeddedServer(directory)
    server.start()
    if manager_settings is None or manager_settings.n_workers > 0:
        managers = embedded_managers(server, manager_settings)
        if not any(m.running for m in managers.status()):
            managers.start()
    return server.connection(role)


@contextmanager
def temporary_server(
    directory: str | Path, settings: ServerSettings | None = None
) -> Iterator[EmbeddedServer]:
    """The existing embedded server in ``directory``, running for the block: started if it was
    stopped and stopped again after; a server that was running is left running."""
    server = EmbeddedServer(directory, settings)
    if not server.initialized:
        raise ServerError(f"no embedded server in {server.directory}")
    started = not server.status().running
    if started:
        server.start()
    try:
        yield server
    finally:
        if started:
            server.stop()
