"""The embedded QCFractal server: its own PostgreSQL, config, accounts and process under one directory.

Layout of the directory::

    server.json                 address and ports (no secrets)
    secrets/credentials.yaml    generated passwords (0600, directory 0700)
    qcfractal/                  QCFractal config (0600), logs, PID file
    postgres/                   PostgreSQL data, socket and log (owned by the PostgreSQL account)
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Literal

import requests
import yaml
from pydantic import BaseModel, Field, SecretStr

from bespoke_fractal import processes
from bespoke_fractal.errors import CredentialsError, ServerError
from bespoke_fractal.files import write_private
from bespoke_fractal.server.connection import ServerConnection
from bespoke_fractal.server.postgres import PostgresInstance, postgres_can_enter

Role = Literal["admin", "submit", "compute", "read"]
ROLES: tuple[Role, ...] = ("admin", "submit", "compute", "read")
DATABASE_NAME = "qcfractal"
DATABASE_USER = "qcfractal"
EXTERNAL_POSTGRES_ROOT = Path("/var/lib/bespoke-fractal")


def _secret() -> str:
    """A random password of 32 URL-safe characters."""
    return secrets.token_urlsafe(24)


def _free_port(host: str) -> int:
    from qcfractal.port_util import find_open_port

    return find_open_port(host)


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # as servers bind: a port left in TIME_WAIT by our own last run is free to reuse
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class ServerSettings(BaseModel):
    """Tunable settings of the embedded server (fast turnaround by default)."""

    host: str = "127.0.0.1"
    port: int | None = None
    service_frequency: int = 1
    heartbeat_frequency: int = 10
    heartbeat_max_missed: int = 3
    max_active_services: int = 20
    compute_lost_resets: int = Field(
        5,
        ge=0,
        description="times the server itself resets a task whose worker vanished (batch job killed, "
        "walltime, node lost); other errors are left to the coordinator's max_qc_resets",
    )


class ServerState(BaseModel):
    """What ``server.json`` records: where the server listens (no secrets)."""

    host: str
    api_port: int
    db_port: int
    settings: ServerSettings

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.api_port}"


class Account(BaseModel):
    username: str
    password: SecretStr


class Credentials(BaseModel):
    """The generated secrets of one embedded server."""

    database: Account
    api_secret_key: SecretStr
    jwt_secret_key: SecretStr
    users: dict[str, Account]

    @classmethod
    def generate(cls) -> Credentials:
        return cls(
            database=Account(username=DATABASE_USER, password=_secret()),
            api_secret_key=secrets.token_urlsafe(32),
            jwt_secret_key=secrets.token_urlsafe(32),
            users={role: Account(username=f"bespoke-{role}", password=_secret()) for role in ROLES},
        )

    def dump(self) -> str:
        def plain(account: Account) -> dict[str, str]:
            return {"username": account.username, "password": account.password.get_secret_value()}

        return yaml.safe_dump(
            {
                "database": plain(self.database),
                "api_secret_key": self.api_secret_key.get_secret_value(),
                "jwt_secret_key": self.jwt_secret_key.get_secret_value(),
                "users": {role: plain(account) for role, account in self.users.items()},
            }
        )


class ServerStatus(BaseModel):
    directory: str
    initialized: bool
    running: bool
    postgres_running: bool
    address: str | None = None
    pid: int | None = None


class EmbeddedServer:
    """Create, start, stop and query a QCFractal server that owns ``directory``."""

    def __init__(self, directory: str | Path, settings: ServerSettings | None = None) -> None:
        self.directory = Path(directory).absolute()
        self._settings = settings
        self.secrets_dir = self.directory / "secrets"
        self.credentials_file = self.secrets_dir / "credentials.yaml"
        self.qcfractal_dir = self.directory / "qcfractal"
        self.config_file = self.qcfractal_dir / "qcfractal_config.yaml"
        self.log_file = self.qcfractal_dir / "qcfractal_server.log"
        self.pid_file = self.qcfractal_dir / "qcfractal_server.pid"
        self.state_file = self.directory / "server.json"
        self._postgres: PostgresInstance | None = None

    @property
    def postgres(self) -> PostgresInstance:
        """The PostgreSQL instance; its data is ``DIR/postgres`` (or where that link points)."""
        if self._postgres is None:
            self._postgres = PostgresInstance((self.directory / "postgres").resolve())
        return self._postgres

    def _place_postgres(self) -> None:
        """Keep PostgreSQL's data in DIR unless its account cannot enter DIR (e.g. a 0700 home
        when running as root): then it goes to /var/lib/bespoke-fractal and DIR/postgres links to it."""
        link = self.directory / "postgres"
        if os.geteuid() != 0 or link.exists() or link.is_symlink():
            return
        if postgres_can_enter(self.directory):
            return
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
        outside = EXTERNAL_POSTGRES_ROOT / digest
        outside.mkdir(parents=True, exist_ok=True)
        os.chmod(EXTERNAL_POSTGRES_ROOT, 0o755)
        link.symlink_to(outside, target_is_directory=True)
        self._postgres = None

    # -- state and secrets ------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.state_file.exists() and self.credentials_file.exists()

    def state(self) -> ServerState:
        try:
            return ServerState.model_validate_json(self.state_file.read_text())
        except FileNotFoundError:
            raise ServerError(f"no embedded server in {self.directory}: start it first") from None

    def credentials(self) -> Credentials:
        try:
            return Credentials.model_validate(yaml.safe_load(self.credentials_file.read_text()))
        except FileNotFoundError:
            raise CredentialsError(f"no credentials in {self.secrets_dir}") from None
        except PermissionError:
            raise CredentialsError(f"credentials file {self.credentials_file} is not readable") from None

    @property
    def address(self) -> str:
        return self.state().address

    def connection(self, role: Role = "submit") -> ServerConnection:
        """Connection details for one of the generated accounts."""
        account = self.credentials().users[role]
        return ServerConnection(address=self.address, username=account.username, password=account.password)

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ServerStatus:
        """Initialise on first use, then start PostgreSQL and the QCFractal server; idempotent."""
        if processes.read_pid(self.pid_file) is not None and self._api_ready():
            return self.status()
        self._prepare_directory()
        first_time = not self.initialized
        if first_time:
            settings = self._settings or ServerSettings()
            credentials = Credentials.generate()
            write_private(self.credentials_file, credentials.dump())
            state = ServerState(
                host=settings.host,
                api_port=settings.port or _free_port(settings.host),
                db_port=_free_port("127.0.0.1"),
                settings=settings,
            )
        else:
            credentials = self.credentials()
            state = self.state()
            if self._settings is not None:
                state.settings = self._settings
        state = self._ensure_ports(state)
        self.state_file.write_text(state.model_dump_json(indent=2))
        self._write_config(state, credentials)

        self._place_postgres()
        if not self.postgres.initialized:
            self.postgres.initialize(
                credentials.database.username, credentials.database.password.get_secret_value()
            )
        self.postgres.start(state.db_port)
        if first_time or not self._database_ready():
            self._create_database_and_users(credentials)
        self._spawn_server()
        try:
            processes.wait_for(self._api_ready_or_dead, timeout, 0.5, "the QCFractal server to answer")
        except TimeoutError:
            self.stop()
            raise ServerError(
                f"the QCFractal server did not start within {timeout:.0f} s; see {self.log_file}"
            ) from None
        if processes.read_pid(self.pid_file) is None:
            raise ServerError(f"the QCFractal server exited during start-up; see {self.log_file}")
        return self.status()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the QCFractal server, then its PostgreSQL."""
        processes.stop(self.pid_file, timeout=timeout)
        if self.postgres.initialized:
            self.postgres.stop()

    def status(self) -> ServerStatus:
        pid = processes.read_pid(self.pid_file)
        running = pid is not None and self._api_ready()
        return ServerStatus(
            directory=str(self.directory),
            initialized=self.initialized,
            running=running,
            postgres_running=self.postgres.running,
            address=self.state().address if self.state_file.exists() else None,
            pid=pid,
        )

    # -- internals ------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o755)  # PostgreSQL's account must traverse it
            for private in (self.secrets_dir, self.qcfractal_dir):
                private.mkdir(exist_ok=True)
                os.chmod(private, 0o700)
        except OSError as exc:
            raise ServerError(f"cannot use {self.directory} for the server: {exc.strerror}") from None

    def _ensure_ports(self, state: ServerState) -> ServerState:
        """Keep the recorded ports; pick new free ones if another program took them."""
        if not self.postgres.running and not _port_free("127.0.0.1", state.db_port):
            state.db_port = _free_port("127.0.0.1")
        if not _port_free(state.host, state.api_port):
            if state.settings.port:
                raise ServerError(f"port {state.api_port} on {state.host} is already in use")
            state.api_port = _free_port(state.host)
        return state

    def _config_dict(self, state: ServerState, credentials: Credentials) -> dict:
        settings = state.settings
        return {
            "name": "bespoke-fractal embedded server",
            "base_folder": str(self.qcfractal_dir),
            "enable_security": True,
            "allow_unauthenticated_read": False,
            "logfile": str(self.log_file),
            "loglevel": "INFO",
            "service_frequency": settings.service_frequency,
            "max_active_services": settings.max_active_services,
            "heartbeat_frequency": settings.heartbeat_frequency,
            "heartbeat_max_missed": settings.heartbeat_max_missed,
            "auto_reset": {
                "enabled": settings.compute_lost_resets > 0,
                "compute_lost": settings.compute_lost_resets,
                "unknown_error": 0,
                "random_error": 0,
            },
            "temporary_dir": str(self.qcfractal_dir / "tmp"),
            "database": {
                "own": False,
                "host": "127.0.0.1",
                "port": state.db_port,
                "database_name": DATABASE_NAME,
                "username": credentials.database.username,
                "password": credentials.database.password.get_secret_value(),
            },
            "api": {
                "host": state.host,
                "port": state.api_port,
                "secret_key": credentials.api_secret_key.get_secret_value(),
                "jwt_secret_key": credentials.jwt_secret_key.get_secret_value(),
                "user_session_cookie_secure": False,
            },
        }

    def _write_config(self, state: ServerState, credentials: Credentials) -> None:
        write_private(self.config_file, yaml.safe_dump(self._config_dict(state, credentials)))

    def _fractal_config(self):
        from qcfractal.config import read_configuration

        return read_configuration([str(self.config_file)])

    def _database_ready(self) -> bool:
        from qcfractal.postgres_harness import PostgresHarness

        return PostgresHarness(self._fractal_config().database).can_connect()

    def _create_database_and_users(self, credentials: Credentials) -> None:
        """Create the QCFractal database and the accounts, in this process (no passwords in argv)."""
        from qcfractal.db_socket import SQLAlchemySocket
        from qcfractal.postgres_harness import PostgresHarness
        from qcportal.auth import UserInfo

        config = self._fractal_config()
        PostgresHarness(config.database).create_database(create_tables=True)
        socket = SQLAlchemySocket(config)
        existing = {user["username"] for user in socket.users.list()}
        for role, account in credentials.users.items():
            if account.username in existing:
                continue
            info = UserInfo(username=account.username, role=role, enabled=True, fullname="")
            socket.users.add(info, account.password.get_secret_value())

    def _spawn_server(self) -> None:
        exe = shutil.which("qcfractal-server", path=str(Path(sys.executable).parent))
        if exe is None:
            raise ServerError("qcfractal-server is not installed in this Python environment")
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        processes.spawn(
            [exe, "--config", str(self.config_file), "start"],
            pid_file=self.pid_file,
            log_file=self.qcfractal_dir / "qcfractal_server.stdout",
            env=env,
            cwd=self.qcfractal_dir,
        )

    def _api_ready(self) -> bool:
        if not self.state_file.exists():
            return False
        try:
            response = requests.get(f"{self.address}/api/v1/information", timeout=2)
        except requests.RequestException:
            return False
        return response.status_code in (200, 401)

    def _api_ready_or_dead(self) -> bool:
        return self._api_ready() or processes.read_pid(self.pid_file) is None
