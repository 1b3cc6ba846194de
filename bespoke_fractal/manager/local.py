"""Compute managers on this machine: N manager processes, one worker each, pinned to own cores."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bespoke_fractal import processes
from bespoke_fractal.errors import ManagerError
from bespoke_fractal.manager.compute_internals import TASK_SCRIPT
from bespoke_fractal.manager.config import write_compute_config
from bespoke_fractal.server.connection import ServerConnection

WARM_CLIENT = Path(__file__).with_name("warm_client.py")


class ManagerSettings(BaseModel):
    """Size and behaviour of the local compute managers."""

    n_workers: int = Field(1, ge=1, description="worker processes (one manager process each)")
    cores_per_worker: int = Field(1, ge=1, description="cores given to each QC calculation")
    memory_per_worker: float = Field(2.0, gt=0, description="memory per worker in GiB")
    update_frequency: int = Field(
        1, ge=1, strict=True, description="whole seconds between server polls (no fractions)"
    )
    compute_tags: list[str] = Field(default_factory=lambda: ["*"])
    cluster: str = "bespoke-local"


def write_task_bin(bin_dir: Path) -> Path:
    """Write the programs QC tasks must find first on PATH:

    - ``python3``: this environment's Python, running qcfractalcompute's task script with the
      qcengine fixes of every QC program (:mod:`bespoke_fractal.compat.qcengine`), in a fork of
      the manager's warm task server when one runs (:mod:`bespoke_fractal.manager.warm`), else
      in a new process;
    - each registered QC program's ``task_commands`` (:mod:`bespoke_fractal.qc.programs`), such
      as psi4's ``dftd3``.
    """
    from bespoke_fractal.qc.programs import list_programs

    bin_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    shims: dict[str, str | None] = {
        "python3": 'case "$1" in\n'
        f'  */{TASK_SCRIPT}) exec "{python}" -S "{WARM_CLIENT}" "{python}" "$@" ;;\n'
        "esac\n"
        f'exec "{python}" "$@"\n'
    }
    for program in list_programs():
        shims.update(program.task_commands(python))
    for name, body in shims.items():
        path = bin_dir / name
        if body is None:
            path.unlink(missing_ok=True)
            continue
        header = "#!/bin/sh\n# written by bespoke-fractal for the QC tasks of its managers\n"
        path.write_text(header + body)
        path.chmod(0o755)
    return bin_dir


class ManagerProcess(BaseModel):
    index: int
    pid: int | None
    running: bool
    cores: list[int]
    log_file: str


def _core_sets(n_workers: int, cores_per_worker: int) -> list[list[int]]:
    """Disjoint CPU sets per worker when they fit on this machine, else no pinning (empty sets)."""
    available = sorted(os.sched_getaffinity(0))
    if n_workers * cores_per_worker > len(available):
        return [[] for _ in range(n_workers)]
    return [available[i * cores_per_worker : (i + 1) * cores_per_worker] for i in range(n_workers)]


class LocalManagers:
    """Start, stop and inspect the compute-manager processes kept in ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        connection: ServerConnection,
        settings: ManagerSettings | None = None,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.connection = connection
        self.settings = settings or ManagerSettings()

    def _paths(self, index: int) -> tuple[Path, Path, Path]:
        base = self.directory / f"manager-{index}"
        return base.with_suffix(".yaml"), base.with_suffix(".pid"), base.with_suffix(".log")

    def _config(self, index: int) -> dict[str, Any]:
        """Manager ``index``'s config, its parts built by qcfractalcompute's models."""
        from qcfractalcompute.config import FractalServerSettings, LocalExecutorConfig

        s = self.settings
        password = self.connection.password
        server = FractalServerSettings(
            fractal_uri=self.connection.address,
            username=self.connection.username,
            password=password.get_secret_value() if password else None,
            verify=self.connection.verify,
        )
        executor = LocalExecutorConfig(
            type="local",
            max_workers=1,
            cores_per_worker=s.cores_per_worker,
            memory_per_worker=s.memory_per_worker,
            compute_tags=s.compute_tags,
            scratch_directory=str(self.directory / "scratch"),
        )
        return {
            "cluster": f"{s.cluster}-{index}",
            "loglevel": "INFO",
            "update_frequency": s.update_frequency,
            "update_frequency_jitter": 0.0,
            "parsl_run_dir": str(self.directory / "parsl" / str(index)),
            "server": server.model_dump(exclude_unset=True),
            "executors": {"local": executor.model_dump(exclude_unset=True)},
        }

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        bin_dir = str(Path(sys.executable).parent)
        # qcfractalcompute runs each task with the first ``python3`` on PATH.
        task_bin = write_task_bin(self.directory / "bin")
        env["PATH"] = os.pathsep.join([str(task_bin), bin_dir, env.get("PATH", "")])
        env.update(processes.thread_environment(self.settings.cores_per_worker))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> list[ManagerProcess]:
        """Start any manager process that is not running; idempotent."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            (self.directory / "scratch").mkdir(exist_ok=True)
        except OSError as exc:
            raise ManagerError(f"cannot use {self.directory} for managers: {exc.strerror}") from None
        self.connection.check_reachable()
        env = self._environment()
        cores = _core_sets(self.settings.n_workers, self.settings.cores_per_worker)
        for index in range(self.settings.n_workers):
            config_file, pid_file, log_file = self._paths(index)
            if processes.read_pid(pid_file) is not None:
                continue
            write_compute_config(config_file, self._config(index))
            processes.spawn(
                [sys.executable, "-m", "bespoke_fractal.manager.run", "--config", str(config_file)],
                pid_file=pid_file,
                log_file=log_file,
                env=env,
                cwd=self.directory,
                cpu_affinity=cores[index],
            )
        return self.status()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM every manager (they return unfinished tasks to the server); count stopped."""
        stopped = 0
        for pid_file in sorted(self.directory.glob("manager-*.pid")):
            stopped += processes.stop(pid_file, timeout=timeout)
        return stopped

    def status(self) -> list[ManagerProcess]:
        result = []
        for pid_file in sorted(self.directory.glob("manager-*.pid")):
            index = int(pid_file.stem.split("-")[1])
            pid = processes.read_pid(pid_file)
            cores = sorted(os.sched_getaffinity(pid)) if pid else []
            result.append(
                ManagerProcess(
                    index=index,
                    pid=pid,
                    running=pid is not None,
                    cores=cores,
                    log_file=str(self._paths(index)[2]),
                )
            )
        return result
