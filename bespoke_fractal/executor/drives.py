"""QC drives for job descriptions: submit every target's fragment torsion, collect profiles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bespoke_fractal.qc.torsiondrive import TorsionDrive, TorsionDriveResult, TorsionDriveStage
from bespoke_fractal.workflow.schema import BespokeOptimizationSchema


def submit_targets(
    stage: TorsionDriveStage, schemas: Iterable[BespokeOptimizationSchema]
) -> list[TorsionDrive]:
    """Submit the drive of every target of every job; a torsion shared by several targets or
    jobs is one drive (the server keeps one entry per torsion identity and spec)."""
    drives: dict[tuple[str, str], TorsionDrive] = {}
    for schema in schemas:
        for target in schema.targets:
            key = (schema.qc_spec.dataset_name, target.identity.key)
            if key in drives:
                continue
            fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
            (drive,) = stage.submit(fragment, [target.fragment_dihedral], schema.qc_spec)
            drives[key] = drive
    return list(drives.values())


def run_targets(
    stage: TorsionDriveStage, schemas: Iterable[BespokeOptimizationSchema], **wait_options: Any
) -> dict[tuple[str, str], TorsionDriveResult]:
    """Submit and wait; results keyed by (dataset name, torsion identity key)."""
    drives = submit_targets(stage, list(schemas))
    results = stage.wait(drives, **wait_options)
    return {
        (drive.dataset_name, drive.torsion.identity.key): result
        for drive, result in zip(drives, results, strict=True)
    }
