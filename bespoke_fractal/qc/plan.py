"""What torsion drives would cost before any is submitted: server lookups and a QC cost model.

Nothing here creates datasets, entries or records. The lookup reads the spec's dataset (the one
:meth:`TorsionDriveStage.submit_many` would use) by entry name, which is the canonical torsion
identity; the cost model is measured on that dataset's complete drives, whose optimisations
record their wall time (qcengine provenance) and number of gradients (their energies).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from bespoke_fractal.qc.programs import RecordedCost, list_programs
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.server.records import record_status

if TYPE_CHECKING:
    from qcportal import PortalClient

IN_PROGRESS = {"waiting", "running"}
MAX_MEASURED_DRIVES = 20


class DriveCounts(BaseModel):
    """Torsion drives of a set of targets by their state on the server."""

    targets: int = Field(0, description="target torsions (rotatable bonds to fit)")
    unique: int = Field(0, description="distinct torsion drives (canonical identities)")
    complete: int = 0
    in_progress: int = Field(0, description="waiting or running on the server")
    errored: int = Field(0, description="errored on the server; a submission resets them")
    to_compute: int = Field(0, description="not on the server, or errored")
    parent: int = Field(
        0, description="of the distinct drives, those on whole parent molecules (drive_parent)"
    )

    @classmethod
    def of(cls, targets: int, statuses: Iterable[str | None]) -> DriveCounts:
        """Counts from the server status of each distinct drive (None: not on the server)."""
        counts = cls(targets=targets)
        for status in statuses:
            counts.unique += 1
            if status == "complete":
                counts.complete += 1
            elif status in IN_PROGRESS:
                counts.in_progress += 1
            else:
                counts.errored += status is not None
                counts.to_compute += 1
        return counts


def needs_computing(status: str | None) -> bool:
    """Whether a drive of this server status (None: not on the server) is to be computed."""
    return status != "complete" and status not in IN_PROGRESS


class CostModel(BaseModel):
    """QC cost of one drive: grid points x gradients per grid point x core-seconds per gradient.

    Core-seconds are task wall seconds (geomeTRIC's provenance, so geomeTRIC's own work and the
    task overhead are included) times ``cores_per_task``.
    """

    core_seconds_per_gradient: float = Field(gt=0)
    gradients_per_grid_point: float = Field(gt=0)
    cores_per_task: int = Field(1, ge=1)
    source: str = Field(description="where the numbers come from")
    measured_drives: int = 0
    measured_optimizations: int = 0

    def drive_core_hours(self, spec: QCSpec) -> float:
        """Estimated core-hours of one 1-D drive of ``spec`` on a typical fragment (the model has
        no size term: its numbers are averages over the drives measured, mostly fragments)."""
        points = 360 // spec.grid_spacing
        return points * self.gradients_per_grid_point * self.core_seconds_per_gradient / 3600

    @classmethod
    def recorded(cls, spec: QCSpec, cores_per_task: int = 1) -> CostModel:
        """The method's recorded cost (its program module's ``costs``); a rough guess for a method
        not recorded."""
        cost = recorded_costs().get(method_key(spec))
        if cost is None:
            return cls(
                core_seconds_per_gradient=1.0,
                gradients_per_grid_point=30.0,
                cores_per_task=cores_per_task,
                source=f"no record for {method_key(spec)}: a guess of 1 core-s per gradient",
            )
        return cls(
            **cost.model_dump(exclude={"note"}),
            cores_per_task=cores_per_task,
            source=f"recorded: {cost.note}",
        )


def method_key(spec: QCSpec) -> str:
    """``program/method/basis`` (``none`` without basis), the key of :func:`recorded_costs`."""
    return f"{spec.program}/{spec.method}/{spec.basis or 'none'}"


def recorded_costs() -> dict[str, RecordedCost]:
    """Every registered program's recorded costs (:mod:`bespoke_fractal.qc.programs`), by
    :func:`method_key`."""
    return {
        f"{program.name}/{key}": cost for program in list_programs() for key, cost in program.costs.items()
    }


def _dataset(client: PortalClient, spec: QCSpec):
    """The spec's dataset if it exists and has the spec; None otherwise (nothing is created)."""
    from qcportal.client_base import PortalRequestError

    try:
        dataset = client.get_dataset("torsiondrive", spec.dataset_name)
    except PortalRequestError as exc:
        if "could not find" in str(exc).lower():
            return None
        raise
    return dataset if spec.label in dataset.specification_names else None


def drive_statuses(client: PortalClient, spec: QCSpec, keys: Iterable[str]) -> dict[str, str | None]:
    """Server status of each torsion identity key under ``spec``; None where no record exists."""
    wanted = sorted(set(keys))
    statuses: dict[str, str | None] = dict.fromkeys(wanted)
    dataset = _dataset(client, spec)
    if dataset is None or not wanted:
        return statuses
    present = sorted(set(wanted) & set(dataset.entry_names))
    if present:
        for entry, _spec, record in dataset.iterate_records(
            entry_names=present, specification_names=[spec.label]
        ):
            statuses[entry] = record_status(record)
    return statuses


def measure_cost(client: PortalClient, spec: QCSpec, cores_per_task: int = 1) -> CostModel:
    """Cost model from up to :data:`MAX_MEASURED_DRIVES` complete drives of ``spec`` on the
    server; the recorded cost when there are none."""
    dataset = _dataset(client, spec)
    if dataset is None:
        return CostModel.recorded(spec, cores_per_task)
    drive_ids = [
        record.id
        for _entry, _spec, record in dataset.iterate_records(specification_names=[spec.label])
        if record_status(record) == "complete"
    ][-MAX_MEASURED_DRIVES:]
    if not drive_ids:
        return CostModel.recorded(spec, cores_per_task)
    points, measured = _optimizations(client, drive_ids)
    seconds = gradients = optimizations = 0
    for opt in measured:
        wall = _wall_time(opt)
        if wall is None or not opt.energies:
            continue  # replayed (imported) results carry no wall time
        seconds += wall
        gradients += len(opt.energies)
        optimizations += 1
    if not gradients or not points:
        return CostModel.recorded(spec, cores_per_task)
    return CostModel(
        core_seconds_per_gradient=seconds * cores_per_task / gradients,
        gradients_per_grid_point=gradients / points,
        cores_per_task=cores_per_task,
        source=f"measured on this server: {len(drive_ids)} complete drive(s), {int(optimizations)} "
        "optimisation(s)",
        measured_drives=len(drive_ids),
        measured_optimizations=optimizations,
    )


def _wall_time(optimization) -> float | None:
    """Wall seconds of an optimisation's last successful computation (qcengine provenance)."""
    for entry in reversed(optimization.compute_history or []):
        if record_status(entry) == "complete" and entry.provenance is not None:
            wall = (entry.provenance.model_extra or {}).get("wall_time")
            if wall is not None:
                return float(wall)
    return None


def _optimizations(client: PortalClient, drive_ids: Iterable[int]) -> tuple[int, list]:
    """Grid points and optimisation records (with compute history) of the given drives, in two
    queries whatever their number."""
    drives = client.get_torsiondrives(sorted(set(drive_ids)), include=["optimizations"])
    ids = [o.id for drive in drives for opts in (drive.optimizations or {}).values() for o in opts]
    points = sum(len(drive.optimizations or {}) for drive in drives)
    return points, client.get_optimizations(ids, include=["compute_history"]) if ids else []


def optimization_seconds(client: PortalClient, drive_ids: Iterable[int]) -> float:
    """Summed wall seconds of every optimisation of the given drives (their measured QC time)."""
    return sum(_wall_time(o) or 0.0 for o in _optimizations(client, drive_ids)[1])
