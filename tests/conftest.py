"""One real QCFractal server (own PostgreSQL) and real compute managers for the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bespoke_fractal.manager import LocalManagers, ManagerSettings
from bespoke_fractal.qc import TorsionDriveStage
from bespoke_fractal.server import EmbeddedServer, ServerSettings
from bespoke_fractal.session import embedded_managers


def _traversable_tempdir(prefix: str) -> Path:
    # pytest's own temporary root is 0700, which PostgreSQL's account cannot enter when root.
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="session")
def traversable_directory():
    """Make directories under /tmp that PostgreSQL's account can enter; removed at the end."""
    made: list[Path] = []

    def make(prefix: str) -> Path:
        made.append(_traversable_tempdir(prefix))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_directory() -> Path:
    path = _traversable_tempdir("bf-test-")
    yield path / "executor"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_server(server_directory: Path) -> EmbeddedServer:
    # a manager killed by a test is declared dead after 3 missed 2 s heartbeats, not 30 s
    server = EmbeddedServer(server_directory, ServerSettings(heartbeat_frequency=2))
    server.start()
    yield server
    embedded_managers(server).stop()
    server.stop()


@pytest.fixture(scope="session")
def managers(embedded_server: EmbeddedServer) -> LocalManagers:
    pool = embedded_managers(embedded_server, ManagerSettings(n_workers=2))
    pool.start()
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def admin_client(embedded_server: EmbeddedServer):
    return embedded_server.connection("admin").client()


@pytest.fixture(scope="session")
def stage(embedded_server: EmbeddedServer, managers: LocalManagers) -> TorsionDriveStage:
    return TorsionDriveStage(embedded_server.connection("submit").client())


@pytest.fixture(scope="session")
def record_count():
    """Count all records on a server, of every type (a new computation always adds some)."""

    def count(client) -> int:
        return sum(1 for _ in client.query_records())

    return count


@pytest.fixture(scope="session")
def am1_cache_directory(tmp_path_factory) -> Path:
    """AM1 bond orders shared by every fragmentation test of the session."""
    return tmp_path_factory.mktemp("am1-cache")
