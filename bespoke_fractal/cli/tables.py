"""What the command line prints: its consoles, the rich tables and one-line job summaries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from bespoke_fractal.executor import BespokeExecutorOutput, QCPlan
    from bespoke_fractal.manager.cluster import ClusterManagerStatus
    from bespoke_fractal.manager.local import ManagerProcess
    from bespoke_fractal.optimization.combine import CombineReport
    from bespoke_fractal.qc.check import CheckResult
    from bespoke_fractal.qc.plan import DriveCounts
    from bespoke_fractal.schema.qc import QCSpec
    from bespoke_fractal.server.accounts import Account
    from bespoke_fractal.workflow.batch import SchemaOutcome

console = Console()
errors = Console(stderr=True)


# -- server, managers, QC, workflows ------------------------------------------------------------
def users_table(accounts: Iterable[Account]) -> Table:
    """The server's accounts and their roles."""
    table = Table("username", "role", "enabled", "fullname")
    for account in accounts:
        table.add_row(account.username, account.role, str(account.enabled), account.fullname)
    return table


def managers_table(processes: Iterable[ManagerProcess], started: Iterable[ClusterManagerStatus]) -> Table:
    """Local manager processes, then the managers started from configs."""
    table = Table("manager", "pid", "running", "cores", "log")
    for p in processes:
        table.add_row(str(p.index), str(p.pid or "-"), str(p.running), str(p.cores), p.log_file)
    for state in started:
        table.add_row(state.name, str(state.pid or "-"), str(state.running), "batch jobs", state.log_file)
    return table


def qc_presets_table(specs: Iterable[QCSpec]) -> Table:
    """The QC specification presets."""
    table = Table("preset", "aliases", "program", "method", "basis", "grid", "description")
    for spec in specs:
        table.add_row(
            spec.name,
            ", ".join(spec.aliases),
            spec.program,
            spec.method,
            spec.basis or "-",
            str(spec.grid_spacing),
            spec.description,
        )
    return table


def qc_check_table(results: Iterable[CheckResult]) -> Table:
    """One row per checked QC preset: how its gradient of water went."""
    columns = ("preset", "program", "version", "method / basis", "seconds", "energy / Eh", "result")
    table = Table(*columns, title="QC check: one gradient of water per preset")
    for result in results:
        table.add_row(
            result.preset,
            result.program,
            result.version or "-",
            f"{result.method} / {result.basis or '-'}",
            f"{result.seconds:.2f}" if result.seconds is not None else "-",
            f"{result.energy_hartree:.8f}" if result.energy_hartree is not None else "-",
            "OK" if result.ok else result.error,
        )
    return table


def workflow_presets_table(presets: dict[str, str]) -> Table:
    """The workflow presets (name -> description) with their QC and fragmenter settings."""
    from bespoke_fractal.workflow import BespokeWorkflowFactory

    table = Table("preset", "QC", "grid", "conformers", "fragmenter", "description")
    for name, description in presets.items():
        factory = BespokeWorkflowFactory.from_preset(name)
        spec = factory.qc_spec
        table.add_row(
            name,
            spec.label,
            f"{spec.grid_spacing}°",
            str(spec.n_conformers),
            factory.fragmentation_engine.type,
            description,
        )
    return table


def fragment_table(outcomes: Iterable[SchemaOutcome]) -> Table:
    """Fragments, target bonds, drives and AM1 reuse of each molecule fragmented."""
    table = Table("molecule", "fragments", "target bonds", "drives", "AM1 run/reused", "seconds")
    for outcome in outcomes:
        if not outcome.ok:
            continue
        fragmented = outcome.schema_.fragmentation
        table.add_row(
            outcome.name,
            str(len(fragmented.fragments)),
            str(sum(len(t.parent_bonds) for t in fragmented.targets)),
            str(len(fragmented.unique_identities)),
            f"{fragmented.am1_computed}/{fragmented.am1_reused}",
            f"{outcome.seconds:.1f}",
        )
    return table


# -- executor jobs ----------------------------------------------------------------------------
def jobs_table(outputs: Iterable[BespokeExecutorOutput]) -> Table:
    """One row per job: its status, each stage's and its error."""
    table = Table("job", "molecule", "status", "fragmentation", "QC drives", "optimisation", "error")
    for output in outputs:
        stages = {stage.type: stage for stage in output.stages}
        qc = output.qc
        drives = f"{qc.complete}/{qc.total}" + (f" ({qc.errored} errored)" if qc.errored else "")
        fit = stages["optimization"]
        table.add_row(
            output.id,
            output.name,
            output.status,
            stages["fragmentation"].status,
            drives if qc.total else stages["qc-generation"].status,
            f"{fit.status}" + (f": {fit.note}" if fit.note and fit.status == "running" else ""),
            (output.error or "").split(": ", 1)[-1][:80],
        )
    return table


def stage_summary(output: BespokeExecutorOutput) -> str:
    """One line per job: each stage's state, the QC drives and the latest note."""
    parts = []
    for stage in output.stages:
        text = f"{stage.type} {stage.status}"
        if stage.type == "qc-generation" and output.qc.total:
            qc = output.qc
            text += f" ({qc.complete}/{qc.total} drives done"
            text += f", {qc.running} running" if qc.running and stage.status == "running" else ""
            text += f", {qc.errored} errored)" if qc.errored else ")"
            if qc.blocked:
                text += f" - {qc.blocked}"
        elif stage.status == "running" and stage.note:
            text += f" ({stage.note})"
        parts.append(text)
    return f"job {output.id} ({output.name}): " + " | ".join(parts)


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}" if before else "-"


def rmse_table(job_id: str, rows: list[dict[str, str]]) -> Table:
    """A job's RMSE against QC per target, before and after the fit (rows of ``rmse_rows``)."""
    parents = any(row["parent_relaxed_rmse_before_kcal_mol"] for row in rows)
    table = Table(
        "target",
        "bonds",
        "QC barrier",
        "relaxed RMSE before → after",
        "frozen RMSE before → after",
        *(["parent relaxed before → after"] if parents else []),
        "kept initial",
        title=f"job {job_id}: RMSE against QC (kcal/mol)",
        caption="relaxed: MM scan with only the dihedral held (judges the fit); frozen: "
        "ForceBalance/BespokeFit protocol; MM shifted by its mean offset",
    )
    for row in rows:
        parent = [
            _arrow(row["parent_relaxed_rmse_before_kcal_mol"], row["parent_relaxed_rmse_after_kcal_mol"])
        ]
        table.add_row(
            row["target"],
            row["parent_bonds"],
            row["qc_barrier_kcal_mol"] or "-",
            _arrow(row["relaxed_rmse_before_kcal_mol"], row["relaxed_rmse_after_kcal_mol"]),
            _arrow(row["frozen_rmse_before_kcal_mol"], row["frozen_rmse_after_kcal_mol"]),
            *(parent if parents else []),
            row["kept_initial"],
        )
    return table


# -- QC plans ---------------------------------------------------------------------------------
def _drives(counts: DriveCounts) -> str:
    """Distinct drives, with how many are of whole parents (drive_parent)."""
    return f"{counts.unique} ({counts.parent} parent)" if counts.parent else str(counts.unique)


def plan_table(plan: QCPlan) -> Table:
    """Per molecule and in total: targets, drives, cached, in progress, to compute, core-hours."""
    table = Table(
        "molecule",
        "targets",
        "drives",
        "complete",
        "in progress",
        "to compute",
        "core-h",
        title=f"QC plan: {plan.qc_spec}, grid {plan.grid_spacing}°",
    )
    checked = plan.server_checked
    for molecule in plan.molecules:
        if molecule.error:
            table.add_row(molecule.name, "-", "-", "-", "-", "-", "-", end_section=False)
            continue
        table.add_row(*_plan_row(molecule.name, molecule.drives, molecule.estimated_core_hours, checked))
    table.add_section()
    table.add_row(*_plan_row("total", plan.total, plan.estimated_core_hours, checked))
    return table


def _plan_row(name: str, d: DriveCounts, core_hours: float, checked: bool) -> list[str]:
    """One row of the plan table: drive counts (cache columns '?' when no server was asked)."""
    cached = [str(d.complete), str(d.in_progress)] if checked else ["?", "?"]
    return [name, str(d.targets), _drives(d), *cached, str(d.to_compute), f"{core_hours:.3g}"]


def print_plan(plan: QCPlan, to: Console) -> None:
    """The plan table, each molecule without drives with its reason, the summary line and the
    cost model's source."""
    to.print(plan_table(plan))
    for molecule in plan.molecules:
        if molecule.error:
            reason = molecule.error.removeprefix(f"{molecule.name}: ")
            to.print(f"{molecule.name}: no drives ({reason})", markup=False, highlight=False)
    to.print(plan.summary(), markup=False, highlight=False)
    to.print(f"cost model: {plan.cost_model.source}", markup=False, highlight=False)


def combine_table(report: CombineReport) -> Table:
    """Per molecule and fitted torsion of a combined force field: its ids there, what was done,
    and the relaxed parent-scan RMSE against QC with its own and the combined force field."""
    table = Table(
        "job",
        "molecule",
        "bonds",
        "ids in combined force field",
        "action",
        "RMSE own → combined",
        title=f"combined force field: {report.bespoke_parameters} bespoke torsions, "
        f"{len(report.molecules)} molecules",
        caption="RMSE (kcal/mol): relaxed MM scan of the parent vs the target's QC profile; "
        "= : not rescanned, the parameters are identical",
    )
    for molecule in report.molecules:
        for torsion in molecule.torsions:
            rmse = "-"
            if torsion.rmse_own is not None and torsion.rmse_combined is not None:
                rmse = f"{torsion.rmse_own:.3f} → {torsion.rmse_combined:.3f}"
                rmse += "" if torsion.scanned else " (=)"
            action = torsion.action + (f": {torsion.note}" if torsion.note else "")
            table.add_row(
                molecule.job_id,
                molecule.name,
                " ".join(f"{a}-{b}" for a, b in torsion.parent_bonds),
                " ".join(torsion.combined_ids),
                action,
                rmse,
            )
    return table
