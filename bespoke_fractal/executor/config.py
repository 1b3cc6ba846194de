"""Resources of the workers of one executor stage, and the settings of one coordinator."""

from __future__ import annotations

import os
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field, field_validator


def machine_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


class BespokeWorkerConfig(BaseModel):
    """Cores and memory one worker of a stage may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_cores: int | Literal["auto"] = Field(1, description="cores per worker; 'auto' is every core")
    max_memory: float | Literal["auto"] = Field(
        "auto", description="GB of memory per core; 'auto' shares the machine's memory among its cores"
    )

    @field_validator("n_cores", mode="before")
    @classmethod
    def _cores(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1 or value != int(value):
            raise ValueError(f"n_cores must be a whole number of at least 1, or 'auto' (got {value!r})")
        return int(value)

    @field_validator("max_memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(
                f"max_memory must be a positive number of GB per core, or 'auto' (got {value!r})"
            )
        return float(value)

    def __init__(self, n_cores: int | Literal["auto"] = 1, **data) -> None:
        super().__init__(n_cores=n_cores, **data)

    @property
    def cores(self) -> int:
        """Cores as a number."""
        return machine_cores() if self.n_cores == "auto" else self.n_cores

    @property
    def memory_per_core(self) -> float:
        """GB per core as a number."""
        if self.max_memory == "auto":
            return round(psutil.virtual_memory().total / 1e9 / psutil.cpu_count(), 2)
        return float(self.max_memory)

    def thread_environment(self) -> dict[str, str]:
        """Thread-count variables that keep numerical libraries to this worker's cores."""
        from bespoke_fractal.processes import thread_environment

        return thread_environment(self.cores)


class CoordinatorSettings(BaseModel):
    """Worker pools and polling of one coordinator."""

    model_config = ConfigDict(frozen=True)

    n_fragmenter_workers: int = Field(1, ge=1)
    fragmenter_worker_config: BespokeWorkerConfig = BespokeWorkerConfig(n_cores=1)
    n_optimizer_workers: int = Field(1, ge=1)
    optimizer_worker_config: BespokeWorkerConfig = BespokeWorkerConfig(n_cores=1)
    poll_interval: float = Field(2.0, gt=0, description="seconds between coordinator steps")
    max_resets: int = Field(2, ge=0, description="resets of an errored QC drive before it fails")
    max_worker_attempts: int = Field(3, ge=1, description="runs of a stage whose worker process died")
    qc_stall_seconds: float = Field(
        120.0,
        gt=0,
        description="seconds a drive may sit running with no service state before it is restarted",
    )
    optimization_timeout: float = Field(3600.0, gt=0, description="seconds one fit may take")
    keep_worse: bool = Field(False, description="keep fitted torsions that the fit made worse")
