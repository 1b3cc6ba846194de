"""The coordinator as a service: one per executor directory, in this process or in a child.

``executor launch`` runs :func:`serve` in its own main thread. :class:`BespokeExecutor` runs it
in a child process (``python -m bespoke_fractal.executor``), so the stage worker pools
never re-import the user's script and a Jupyter kernel or an unguarded script work as they are.
The child reads its :class:`ServiceConfig` (which may hold a password) as one JSON line on
stdin, never from its arguments or environment, answers ``ready`` or ``error: <line>`` on
stdout, and stops when stdin closes (its parent ended, however it ended) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict

from bespoke_fractal.errors import BespokeFractalError, first_line
from bespoke_fractal.executor.coordinator import Coordinator, CoordinatorSettings
from bespoke_fractal.executor.store import JobStore
from bespoke_fractal.executor.supervisor import SupervisedServices, Supervisor
from bespoke_fractal.server import ServerConnection

log = logging.getLogger("bespoke_fractal.executor")

LOCK_NAME = "executor.lock"
LOG_NAME = "executor.log"
# libraries that log every atom or every request at INFO
QUIET_LOGGERS = ("openff", "qcportal", "urllib3", "rdkit", "pint", "numexpr", "matplotlib")


class ExecutorError(BespokeFractalError):
    """The executor cannot start, or a job cannot be submitted or waited for."""


class ServiceConfig(BaseModel):
    """Everything a coordinator needs: where its jobs are, what it runs, which server it uses."""

    model_config = ConfigDict(frozen=True)

    directory: Path
    database_url: str | None = None
    settings: CoordinatorSettings = CoordinatorSettings()
    connection: ServerConnection
    supervise: SupervisedServices | None = None

    def to_secret_json(self) -> str:
        """JSON that includes the password (for the child's stdin only)."""
        data = self.model_dump(mode="json")
        if self.connection.password is not None:
            data["connection"]["password"] = self.connection.password.get_secret_value()
        return json.dumps(data)


class DirectoryLock:
    """One coordinator per directory: an exclusive ``flock`` on ``DIR/executor.lock``.

    The kernel drops the lock when its holder dies, so a crashed run never leaves a stale lock.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            handle = open(self.path, "a+")  # noqa: SIM115 - held for the coordinator's lifetime
        except OSError as exc:
            raise ExecutorError(f"cannot use {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "unknown"
            handle.close()
            raise ExecutorError(
                f"another executor is running on {self.path.parent} (pid {pid}); "
                "stop it or use another --directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def check_free(self) -> None:
        """Raise ExecutorError now if another coordinator holds the lock."""
        self.acquire()
        self.release()

    def holder(self) -> int | None:
        """PID of the coordinator running on the directory, or None."""
        try:
            self.check_free()
        except ExecutorError:
            try:
                return int(self.path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return -1
        return None


def start_logging(directory: Path) -> logging.Handler:
    """Log this package at INFO to ``DIR/executor.log`` (other libraries at WARNING)."""
    handler = logging.FileHandler(Path(directory) / LOG_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("bespoke_fractal")
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def serve(config: ServiceConfig, stop: threading.Event, on_ready=None) -> None:
    """Run the coordinator on ``config.directory`` until ``stop`` is set."""
    lock = DirectoryLock(config.directory)
    lock.acquire()
    store = None
    try:
        store = JobStore.in_directory(config.directory, config.database_url)
        supervisor = Supervisor(config.supervise) if config.supervise else None
        coordinator = Coordinator(config.directory, store, config.connection, config.settings, supervisor)
        with coordinator:
            log.info("coordinator %d running on %s", os.getpid(), config.directory)
            if on_ready is not None:
                on_ready()
            coordinator.loop(stop)
        log.info("coordinator %d stopped", os.getpid())
    finally:
        if store is not None:
            store.close()
        lock.release()


class CoordinatorProcess:
    """A coordinator in a child process, stopped when this process stops it or dies."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(cls, config: ServiceConfig, timeout: float = 120.0) -> CoordinatorProcess:
        """Start the child and wait for it to say it is ready (or raise its error line)."""
        with open(config.directory / LOG_NAME, "ab") as log_file:  # worker tracebacks land here
            process = subprocess.Popen(
                [sys.executable, "-m", "bespoke_fractal.executor"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                # Ctrl-C in the user's terminal reaches the parent, which stops the child in order
                start_new_session=True,
            )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(config.to_secret_json() + "\n")
        process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = (answer[0] if answer else "").strip()
        if line == "ready":
            return cls(process)
        process.kill()
        process.wait()
        if line.startswith("error: "):
            raise ExecutorError(line.removeprefix("error: "))
        raise ExecutorError(
            f"the coordinator did not start within {timeout:.0f} s; see {config.directory / LOG_NAME}"
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 120.0) -> None:
        """Ask the child to stop (closing its stdin), then SIGTERM, then SIGKILL."""
        if self.process.poll() is not None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout / 2 if sig is None else 15)
                return
            except subprocess.TimeoutExpired:
                continue


def main() -> None:
    """Child-process entry point (see the module docstring)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_args: stop.set())
    try:
        config = ServiceConfig.model_validate_json(sys.stdin.readline())
    except Exception as exc:  # noqa: BLE001 - the parent shows this line
        print(f"error: bad coordinator configuration: {first_line(exc)}", flush=True)
        sys.exit(2)

    def watch_parent() -> None:
        sys.stdin.read()  # returns when the parent closes the pipe or dies
        stop.set()

    def ready() -> None:
        threading.Thread(target=watch_parent, daemon=True).start()
        print("ready", flush=True)

    try:
        handler = start_logging(config.directory)
    except OSError as exc:
        print(f"error: cannot write {config.directory / LOG_NAME}: {exc.strerror}", flush=True)
        sys.exit(2)
    try:
        serve(config, stop, on_ready=ready)
    except BespokeFractalError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(2)
    except Exception as exc:
        log.exception("coordinator failed")
        print(f"error: coordinator failed: {type(exc).__name__}: {first_line(exc)}", flush=True)
        sys.exit(1)
    finally:
        logging.getLogger("bespoke_fractal").removeHandler(handler)
