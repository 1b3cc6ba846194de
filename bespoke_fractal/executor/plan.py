"""Cost preview of a batch: fragment, find every drive the fits need, ask the server which exist.

Nothing is submitted. Fragmentation uses the executor directory's AM1 cache, so the jobs that
follow reuse its bond orders; the job descriptions are kept in the plan and can be queued as they
are (:func:`submit_to_store` accepts them), so a batch is fragmented once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.molecules import MoleculeInput
from bespoke_fractal.qc.plan import CostModel, DriveCounts, drive_statuses, measure_cost, needs_computing
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow.batch import SchemaOutcome, build_schemas, load_batch
from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

if TYPE_CHECKING:
    from openff.toolkit import Molecule
    from qcportal import PortalClient


class MoleculePlan(BaseModel):
    """One molecule's drives, or why it has none."""

    name: str
    error: str | None = None
    drives: DriveCounts = Field(default_factory=DriveCounts)
    estimated_core_hours: float = Field(0.0, description="QC cost of its drives to compute")
    drive_keys: list[str] = Field(default_factory=list, description="torsion identity keys")
    parent_drive_keys: list[str] = Field(
        default_factory=list, description="of drive_keys, the drives of the whole parent (drive_parent)"
    )


class QCPlan(BaseModel):
    """What a batch of fits needs from the QC stage and what of it the server already has."""

    model_config = ConfigDict(populate_by_name=True)

    qc_spec: str = Field(description="QC specification label")
    dataset_name: str
    grid_spacing: int
    server: str = Field(description="the server asked, or why none was")
    server_checked: bool = True
    molecules: list[MoleculePlan]
    total: DriveCounts = Field(description="over the batch: a drive shared by molecules counts once")
    estimated_core_hours: float
    cost_model: CostModel
    outcomes: list[SchemaOutcome] = Field(default_factory=list, exclude=True)
    inputs: list[MoleculeInput] = Field(default_factory=list, exclude=True)
    workflow: BespokeWorkflowFactory | None = Field(None, exclude=True)

    def summary(self) -> str:
        """One line, e.g. "12 of 30 drives already cached, 2 in progress, 16 to compute (...)"."""
        t = self.total
        if not self.server_checked:
            parents = f" ({t.parent} of whole parents)" if t.parent else ""
            return (
                f"{t.unique} torsion drive(s){parents} for {t.targets} target torsion(s); cache not checked "
                f"({self.server}); at most ~{self.estimated_core_hours:.3g} core-hours of QC"
            )
        text = f"{t.complete} of {t.unique} drives already cached"
        if t.in_progress:
            text += f", {t.in_progress} in progress"
        text += f", {t.to_compute} to compute"
        if t.errored:
            text += f" ({t.errored} errored before)"
        if t.parent:
            text += f"; {t.parent} of the drives on whole parents"
        return f"{text}: ~{self.estimated_core_hours:.3g} core-hours of QC ({self.qc_spec})"


def plan_schemas(
    outcomes: Iterable[SchemaOutcome],
    client: PortalClient | None,
    factory: BespokeWorkflowFactory,
    *,
    server: str = "",
    cores_per_task: int = 1,
    inputs: Iterable[MoleculeInput] = (),
) -> QCPlan:
    """The plan of job descriptions already built; ``client`` None: the cache is not checked."""
    outcomes = list(outcomes)
    spec = factory.qc_spec
    schemas = [outcome.schema_ for outcome in outcomes if outcome.ok]
    fragment_keys = {target.identity.key for schema in schemas for target in schema.targets}
    parent_keys = {schema.id: _parent_drives(schema) for schema in schemas}
    # relative cost of each drive: 1 for a fragment drive (what the cost model measures), more for
    # a drive only of a whole parent (the largest factor when several jobs need the same one)
    factors = dict.fromkeys(fragment_keys, 1.0)
    for own in parent_keys.values():
        for key, factor in own.items():
            if key not in fragment_keys:
                factors[key] = max(factors.get(key, 0.0), factor)
    if client is None:
        statuses: dict[str, str | None] = dict.fromkeys(factors)
        cost = CostModel.recorded(spec, cores_per_task)
    else:
        statuses = drive_statuses(client, spec, factors)
        cost = measure_cost(client, spec, cores_per_task)
    per_drive = cost.drive_core_hours(spec)

    def core_hours(keys) -> float:
        return per_drive * sum(factors[key] for key in keys if needs_computing(statuses[key]))

    molecules = []
    for outcome in outcomes:
        if not outcome.ok:
            molecules.append(MoleculePlan(name=outcome.name, error=outcome.error))
            continue
        parents = sorted(parent_keys[outcome.schema_.id])
        own = sorted({target.identity.key for target in outcome.schema_.targets} | set(parents))
        counts = DriveCounts.of(len(outcome.schema_.targets), (statuses[key] for key in own))
        counts.parent = len(parents)
        molecules.append(
            MoleculePlan(
                name=outcome.name,
                drives=counts,
                estimated_core_hours=core_hours(own),
                drive_keys=own,
                parent_drive_keys=parents,
            )
        )
    total = DriveCounts.of(sum(m.drives.targets for m in molecules), statuses.values())
    total.parent = sum(key not in fragment_keys for key in statuses)  # a drive that is only a parent's
    return QCPlan(
        qc_spec=spec.label,
        dataset_name=spec.dataset_name,
        grid_spacing=spec.grid_spacing,
        server=server,
        server_checked=client is not None,
        molecules=molecules,
        total=total,
        estimated_core_hours=core_hours(statuses),
        cost_model=cost,
        outcomes=outcomes,
        inputs=list(inputs),
        workflow=factory,
    )


def plan_jobs(
    sources: str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput],
    factory: BespokeWorkflowFactory,
    client: PortalClient | None,
    *,
    cache_directory: str | Path | None = None,
    n_workers: int = 1,
    server: str = "",
    cores_per_task: int = 1,
    enumerate_stereo: bool = False,
) -> QCPlan:
    """Fragment ``sources`` and plan their drives (see :func:`plan_schemas`)."""
    inputs = load_batch(sources, enumerate_stereo)
    outcomes = build_schemas(factory, inputs, n_workers=n_workers, cache_directory=cache_directory)
    return plan_schemas(
        outcomes, client, factory, server=server, cores_per_task=cores_per_task, inputs=inputs
    )


def _parent_drives(schema: BespokeOptimizationSchema) -> dict[str, float]:
    """Identity key -> relative cost of each drive of the whole parent the job needs (none
    without ``drive_parent``).

    The cost model has no size term (its per-gradient seconds are measured on, or recorded for,
    typical fragments), so a parent drive costs the fragment drive times parent atoms / fragment
    atoms of its target. That is a lower bound: a gradient costs more than linearly in atoms for
    DFT (psi4), and a larger molecule takes more geomeTRIC steps per grid point.
    """
    if not schema.drive_parent:
        return {}
    n_parent = schema.parent_molecule().n_atoms
    drives = {}
    for index, _dihedral, identity in schema.parent_drives():
        fragment = schema.fragmentation.fragments[schema.targets[index].fragment].to_molecule()
        drives[identity.key] = n_parent / fragment.n_atoms
    return drives
