"""A compute manager from a scheduler config (``manager_configs/*.yaml``), run in the background.

``bespoke-fractal manager start --config FILE`` runs what ``qcfractal-compute-manager --config
FILE`` runs, with three additions:

- the account can come from the embedded server of ``--directory`` (its compute account), a
  credentials file or ``QCPORTAL_*`` variables; its password reaches the manager through the
  manager's environment (``QCF_COMPUTE_SERVER__PASSWORD``), never a file or an argument;
- every executor's ``worker_init`` first puts this project's task programs on ``PATH``
  (:func:`~bespoke_fractal.manager.local.write_task_bin`: the qcengine fixes and each QC
  program's commands, such as ``dftd3`` for psi4 1.3), so tasks run in batch jobs give the
  results local managers give;
- its rendered config (0600, no password), PID file and log live in
  ``DIR/cluster-managers/NAME/`` so that ``manager stop/status --config`` find it.

The rendered config keeps the file's folder as ``base_folder``: relative ``logfile`` and
``parsl_run_dir`` stay where the file says. The task programs must be on a filesystem the
compute nodes see, as the Python environment itself must.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from bespoke_fractal import processes
from bespoke_fractal.errors import ManagerError
from bespoke_fractal.manager import warm
from bespoke_fractal.manager.compute_internals import PASSWORD_ENV
from bespoke_fractal.manager.config import compute_config, write_compute_config
from bespoke_fractal.manager.local import write_task_bin
from bespoke_fractal.server.connection import ServerConnection

__all__ = ["PASSWORD_ENV", "ClusterManager", "ClusterManagerStatus", "read_config", "started_managers"]


class ClusterManagerStatus(BaseModel):
    name: str
    pid: int | None
    running: bool
    config_file: str
    log_file: str


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping of a manager config, or one clear line."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ManagerError(f"manager config {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ManagerError(f"manager config {path} cannot be read: {first}") from None
    if not isinstance(data, dict) or not isinstance(data.get("executors"), dict) or not data["executors"]:
        raise ManagerError(f"manager config {path} must be a mapping with at least one entry in 'executors'")
    return data


class ClusterManager:
    """One manager process started from a config file; its state in ``state_root/NAME``."""

    def __init__(
        self, config_file: str | Path, state_root: str | Path, connection: ServerConnection | None
    ) -> None:
        self.config_file = Path(config_file).absolute()
        self.connection = connection
        self.name = self.config_file.stem
        self.directory = Path(state_root).absolute() / self.name
        self.rendered_file = self.directory / "manager.yaml"
        self.pid_file = self.directory / "manager.pid"
        self.log_file = self.directory / "manager.log"

    def render(self) -> dict[str, Any]:
        """The config the manager runs: the file's, with the account and the task programs."""
        data = read_config(self.config_file)
        data.setdefault("base_folder", str(self.config_file.parent))
        if self.connection is not None:
            data["server"] = {
                "fractal_uri": self.connection.address,
                "username": self.connection.username,
                "verify": self.connection.verify,
            }
        task_bin = write_task_bin(self.directory / "bin")
        for executor in data["executors"].values():
            if not isinstance(executor, dict):
                raise ManagerError(f"manager config {self.config_file}: every executor must be a mapping")
            lines = [line for line in executor.get("worker_init") or [] if str(task_bin) not in str(line)]
            executor["worker_init"] = [f'export PATH="{task_bin}:$PATH"', *lines]
        compute_config(data, self.config_file.parent, self._password())
        return data

    def _password(self) -> str | None:
        if self.connection is None or self.connection.password is None:
            return None
        return self.connection.password.get_secret_value()

    def start(self) -> ClusterManagerStatus:
        """Start the manager unless it runs; idempotent."""
        if processes.read_pid(self.pid_file) is not None:
            return self.status()
        data = self.render()
        if self.connection is not None:
            self.connection.check_reachable()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_compute_config(self.rendered_file, data, self._password())
        env = dict(os.environ)
        env.pop(warm.SOCKET_ENV, None)
        env[warm.DISABLE_ENV] = "1"  # tasks run in batch jobs, not beside the manager
        python_bin = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([str(self.directory / "bin"), python_bin, env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        password = self._password()
        if password is not None:
            env[PASSWORD_ENV] = password
        processes.spawn(
            [sys.executable, "-m", "bespoke_fractal.manager.run", "--config", str(self.rendered_file)],
            pid_file=self.pid_file,
            log_file=self.log_file,
            env=env,
            cwd=self.config_file.parent,
        )
        return self.status()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the manager: it returns unfinished tasks and cancels its batch jobs."""
        return processes.stop(self.pid_file, timeout=timeout)

    def status(self) -> ClusterManagerStatus:
        return _status(self.directory, self.config_file)


def _status(directory: Path, config_file: Path) -> ClusterManagerStatus:
    pid = processes.read_pid(directory / "manager.pid")
    return ClusterManagerStatus(
        name=directory.name,
        pid=pid,
        running=pid is not None,
        config_file=str(config_file),
        log_file=str(directory / "manager.log"),
    )


def started_managers(state_root: str | Path) -> list[ClusterManagerStatus]:
    """Every manager started from a config under ``state_root`` (running or not); their
    config is the rendered one."""
    directories = sorted(p.parent for p in Path(state_root).glob("*/manager.pid"))
    return [_status(d, d / "manager.yaml") for d in directories]
