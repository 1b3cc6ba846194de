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
    "rmse_before_kcal_mol",
    "rmse_after_kcal_mol",
    "kept_initial",
    "parameter_ids",
    "note",
)


def _bonds(bonds) -> str:
    return " ".join(f"{a}-{b}" for a, b in bonds)


def rmse_rows(output: BespokeExecutorOutput) -> list[dict[str, str]]:
    """One row per target torsion: RMSE against QC before and after the fit (kcal/mol); a
    target without usable QC is a row that says so."""
    rows = [
        {
            "target": str(row.target_index),
            "parent_bonds": _bonds(row.parent_bonds),
            "rmse_before_kcal_mol": f"{row.rmse_before:.3f}",
            "rmse_after_kcal_mol": f"{row.rmse_after:.3f}",
            "kept_initial": "yes" if row.kept_initial else "no",
            "parameter_ids": " ".join(row.parameter_ids),
            "note": "fit made it worse: initial parameters kept" if row.kept_initial else "",
        }
        for row in output.torsion_rmse
    ]
    for target in output.results.unfitted if output.results else []:
        rows.append(
            {
                "target": str(target.target_index),
                "parent_bonds": _bonds(target.parent_bonds),
                "rmse_before_kcal_mol": "",
                "rmse_after_kcal_mol": "",
                "kept_initial": "yes",
                "parameter_ids": "",
                "note": f"not fitted: {target.reason}",
            }
        )
    return sorted(rows, key=lambda row: int(row["target"]))


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
    for row in output.torsion_rmse:
        if row.plot is not None and row.plot.is_file():
            target = directory / "plots" / row.plot.name
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(row.plot, target)
            written.append(target)
    return written
