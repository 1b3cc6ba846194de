"""A finished job on disk: the force field, the full result, the plots and an RMSE table."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from bespoke_fractal.executor.models import BespokeExecutorOutput

FORCE_FIELD_NAME = "force-field.offxml"
RESULT_NAME = "result.json"
RMSE_NAME = "rmse.csv"
RMSE_COLUMNS = (
    "target",
    "parent_bonds",
    "qc_barrier_kcal_mol",
    "relaxed_rmse_before_kcal_mol",
    "relaxed_rmse_after_kcal_mol",
    "frozen_rmse_before_kcal_mol",
    "frozen_rmse_after_kcal_mol",
    "parent_relaxed_rmse_before_kcal_mol",
    "parent_relaxed_rmse_after_kcal_mol",
    "kept_initial",
    "parameter_ids",
    "note",
)
"""relaxed: MM scans with only the driven dihedral held (how the force field is used); frozen:
ForceBalance's and BespokeFit's protocol; parent: relaxed scans on the parent's own QC drive
(``drive_parent``). RMSE over the points within the energy cutoff, MM shifted by its mean offset."""


def _bonds(bonds) -> str:
    return " ".join(f"{a}-{b}" for a, b in bonds)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def rmse_rows(output: BespokeExecutorOutput) -> list[dict[str, str]]:
    """One row per target torsion: RMSE against QC before and after the fit (kcal/mol); a
    target without usable QC is a row that says so."""
    rows = []
    for row in output.torsion_rmse:
        rows.append(
            {
                "target": str(row.target_index),
                "parent_bonds": _bonds(row.parent_bonds),
                "qc_barrier_kcal_mol": _number(row.qc_barrier),
                "relaxed_rmse_before_kcal_mol": _number(row.rmse_before),
                "relaxed_rmse_after_kcal_mol": _number(row.rmse_after),
                "frozen_rmse_before_kcal_mol": _number(row.frozen_rmse_before),
                "frozen_rmse_after_kcal_mol": _number(row.frozen_rmse_after),
                "parent_relaxed_rmse_before_kcal_mol": _number(row.parent_rmse_before),
                "parent_relaxed_rmse_after_kcal_mol": _number(row.parent_rmse_after),
                "kept_initial": "yes" if row.kept_initial else "no",
                "parameter_ids": " ".join(row.parameter_ids),
                "note": _note(output, row.kept_initial),
            }
        )
    for target in output.results.unfitted if output.results else []:
        rows.append(
            dict.fromkeys(RMSE_COLUMNS, "")
            | {
                "target": str(target.target_index),
                "parent_bonds": _bonds(target.parent_bonds),
                "kept_initial": "yes",
                "note": f"not fitted: {target.reason}",
            }
        )
    return sorted(rows, key=lambda row: int(row["target"]))


def _note(output: BespokeExecutorOutput, kept_initial: bool) -> str:
    if not kept_initial:
        return ""
    if output.results is not None and not output.results.converged:
        return "fit did not converge: initial parameters kept"
    return "fitted parameters raised the relaxed-scan RMSE: initial parameters kept"


def write_job_output(output: BespokeExecutorOutput, directory: str | Path) -> list[Path]:
    """Write what the job has into ``directory``; returns the files written.

    ``result.json`` always (status, stages, errors, scores); ``force-field.offxml``,
    ``rmse.csv`` and ``plots/`` once the job has been fitted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / RESULT_NAME]
    written[0].write_text(output.model_dump_json(indent=2, exclude={"offxml"}) + "\n")
    if output.offxml is not None:
        path = directory / FORCE_FIELD_NAME
        path.write_text(output.offxml)
        written.append(path)
    rows = rmse_rows(output)
    if rows:
        path = directory / RMSE_NAME
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RMSE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        written.append(path)
    for plot in [p for row in output.torsion_rmse for p in (row.plot, row.parent_plot)]:
        if plot is not None and plot.is_file():
            target = directory / "plots" / plot.name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(plot, target)
            written.append(target)
    return written
