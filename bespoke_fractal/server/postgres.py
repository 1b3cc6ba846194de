"""A private PostgreSQL instance whose data lives under the embedded server's directory.

PostgreSQL refuses to run as root, so when the caller is root every PostgreSQL program runs as
an unprivileged system account (``postgres`` by default) through ``runuser``; otherwise it runs
as the caller.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from bespoke_fractal.errors import ServerError

POSTGRES_ACCOUNT = "postgres"


def postgres_bin_dir() -> Path:
    """Directory holding ``initdb`` and ``pg_ctl``; a clear error when PostgreSQL is missing."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise ServerError(
        "PostgreSQL server programs (initdb, pg_ctl) not found: run scripts/setup.sh, "
        "or install Debian's 'postgresql' package"
    )


def postgres_can_enter(path: Path) -> bool:
    """True when PostgreSQL's account (root's case) can traverse every directory down to ``path``."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(["runuser", "-u", POSTGRES_ACCOUNT, "--", "test", "-x", str(path)])
    return probe.returncode == 0


class PostgresInstance:
    """initdb/start/stop of one PostgreSQL cluster in ``root`` (data, socket and log)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "postgres.log"
        self._bin = postgres_bin_dir()
        self._account = POSTGRES_ACCOUNT if os.geteuid() == 0 else None

    # -- running PostgreSQL programs as the right account ------------------------------------
    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [str(self._bin / program), *args]
        if self._account:
            argv = ["runuser", "-u", self._account, "--", *argv]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/")
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit code {result.returncode}"
            raise ServerError(f"PostgreSQL {program} failed: {reason} (log: {self.log_file})")
        return result

    def _owned_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        if self._account:
            entry = pwd.getpwnam(self._account)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _check_account(self) -> None:
        if not self._account:
            return
        try:
            pwd.getpwnam(self._account)
        except KeyError:
            raise ServerError(
                f"running as root needs a system account '{self._account}' for PostgreSQL: "
                f"create it with 'adduser --system --group {self._account}'"
            ) from None
        if not postgres_can_enter(self.root):
            raise ServerError(
                f"the '{self._account}' account cannot reach {self.root}: every parent directory "
                "must be traversable (o+x); choose a directory outside a private home"
            )

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def initialize(self, superuser: str, password: str) -> None:
        """Create the cluster with a password-protected superuser (scram-sha-256 only)."""
        self._owned_dir(self.root)
        self._check_account()
        self._owned_dir(self.socket_dir)
        pwfile = self.root / ".initdb-password"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (password + "\n").encode())
            os.close(fd)
            if self._account:
                entry = pwd.getpwnam(self._account)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb",
                "-D", str(self.data_dir),
                "-U", superuser,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self, port: int, host: str = "127.0.0.1") -> None:
        if self.running:
            return
        self._check_account()
        options = f"-c port={port} -c listen_addresses={host} -c unix_socket_directories={self.socket_dir}"
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        if not self.initialized:
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0
