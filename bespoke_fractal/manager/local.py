"""Compute managers on this machine: N manager processes, one worker each, pinned to own cores."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from bespoke_fractal import processes
from bespoke_fractal.errors import ManagerError
from bespoke_fractal.files import write_private
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
    """Write the programs QC tasks must find first on PATH (see :mod:`bespoke_fractal.compat`):

    - ``python3``: this environment's Python, running qcfractalcompute's task script with the
      qcengine fixes of :mod:`bespoke_fractal.compat.qcengine`, in a fork of the manager's warm
      task server when one runs (:mod:`bespoke_fractal.manager.warm`), else in a new process;
    - ``dftd3``: the classic DFT-D3 command line on s-dftd3, for psi4 1.3's -D3 corrections,
      unless a real ``dftd3`` is installed.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    shims = {
        "python3": 'case "$1" in\n'
        f'  */qcengine_compute.py) exec "{python}" -S "{WARM_CLIENT}" "{python}" "$@" ;;\n'
        "esac\n"
        f'exec "{python}" "$@"\n'
    }
    real_dftd3 = shutil.which("dftd3", path=os.environ.get("PATH", ""))
    if real_dftd3 is None and importlib.util.find_spec("dftd3") is not None:
        shims["dftd3"] = f'exec "{python}" -m bespoke_fractal.compat.dftd3 "$@"\n'
    for name in ("python3", "dftd3"):
        path = bin_dir / name
        if name not in shims:
            path.unlink(missing_ok=True)
            continue
        header = "#!/bin/sh\n# written by bespoke-fractal for the QC tasks of its managers\n"
        path.write_text(header + shims[name])
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

    def _config(self, index: int) -> dict:
        s = self.settings
        password = self.connection.password
        return {
            "cluster": f"{s.cluster}-{index}",
            "loglevel": "INFO",
            "update_frequency": s.update_frequency,
            "update_frequency_jitter": 0.0,
            "parsl_run_dir": str(self.directory / "parsl" / str(index)),
            "server": {
                "fractal_uri": self.connection.address,
                "username": self.connection.username,
                "password": password.get_secret_value() if password else None,
                "verify": self.connection.verify,
            },
            "executors": {
                "local": {
                    "type": "local",
                    "max_workers": 1,
                    "cores_per_worker": s.cores_per_worker,
                    "memory_per_worker": s.memory_per_worker,
                    "compute_tags": s.compute_tags,
                    "scratch_directory": str(self.directory / "scratch"),
                }
            },
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
            write_private(config_file, yaml.safe_dump(self._config(index)))
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
