"""Resources of the workers of one executor stage."""

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
