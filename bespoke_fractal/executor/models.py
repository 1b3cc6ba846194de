"""What the executor reports about a job: stages, QC progress, the fit, the force field."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from bespoke_fractal.schema.fits import OptimizationResult

Status = Literal["waiting", "running", "success", "errored"]
StageType = Literal["fragmentation", "qc-generation", "optimization"]
STAGES: tuple[StageType, ...] = ("fragmentation", "qc-generation", "optimization")


class QCProgress(BaseModel):
    """Torsion drives of one job on the server, by status."""

    total: int = 0
    complete: int = 0
    running: int = 0
    waiting: int = 0
    errored: int = 0
    new: int = Field(0, description="drives this job added to the server (the rest were cached)")
    blocked: str | None = Field(None, description="why waiting drives cannot start (no manager runs them)")
    record_ids: list[int] = Field(default_factory=list)


class BespokeStageOutput(BaseModel):
    """One stage of one job."""

    type: StageType
    status: Status
    error: str | None = None
    note: str = ""
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now()
        return (end - self.started_at).total_seconds()


class TorsionRMSE(BaseModel):
    """RMSE (kcal/mol) of one target torsion against QC, before and after the fit.

    ``rmse_*``: relaxed MM scans (only the driven dihedral held) on the fragment's QC geometries,
    the score fits are judged by; ``frozen_rmse_*``: ForceBalance's and BespokeFit's frozen
    protocol; ``parent_rmse_*``: relaxed scans on the parent's own QC drive, when it was driven.
    All over the points within the energy cutoff, MM shifted by its mean offset from QC.
    """

    target_index: int
    parent_bonds: list[tuple[int, int]]
    parameter_ids: list[str]
    qc_barrier: float
    rmse_before: float
    rmse_after: float
    frozen_rmse_before: float
    frozen_rmse_after: float
    parent_rmse_before: float | None = None
    parent_rmse_after: float | None = None
    kept_initial: bool
    plot: Path | None = None
    parent_plot: Path | None = None


class BespokeExecutorOutput(BaseModel):
    """A job as the executor knows it: status, stages and, once fitted, the force field."""

    id: str
    name: str
    smiles: str
    status: Status
    stages: list[BespokeStageOutput]
    qc: QCProgress = Field(default_factory=QCProgress)
    results: OptimizationResult | None = None
    offxml: str | None = Field(None, description="the bespoke force field as OFFXML text")
    created_at: datetime

    @property
    def error(self) -> str | None:
        """The first stage error, prefixed with the job id and stage."""
        for stage in self.stages:
            if stage.error:
                return f"job {self.id} ({self.name}), {stage.type}: {stage.error}"
        return None

    @property
    def stage(self) -> BespokeStageOutput:
        """The stage the job is in (or ended in)."""
        for stage in self.stages:
            if stage.status != "success":
                return stage
        return self.stages[-1]

    @property
    def bespoke_force_field(self):
        """The fitted force field as an openff-toolkit ForceField (None until fitted)."""
        if self.offxml is None:
            return None
        from openff.toolkit import ForceField

        return ForceField(self.offxml, load_plugins=False)

    @property
    def torsion_rmse(self) -> list[TorsionRMSE]:
        if self.results is None:
            return []
        return [
            TorsionRMSE(
                target_index=t.target_index,
                parent_bonds=[tuple(b) for b in t.parent_bonds],
                parameter_ids=t.parameter_ids,
                qc_barrier=t.qc_barrier,
                rmse_before=t.relaxed_before.rmse,
                rmse_after=t.relaxed_after.rmse,
                frozen_rmse_before=t.frozen_before.rmse,
                frozen_rmse_after=t.frozen_after.rmse,
                parent_rmse_before=t.parent_relaxed_before.rmse if t.parent_relaxed_before else None,
                parent_rmse_after=t.parent_relaxed_after.rmse if t.parent_relaxed_after else None,
                kept_initial=t.kept_initial,
                plot=t.plot,
                parent_plot=t.parent_plot,
            )
            for t in self.results.torsions
        ]
