"""QC drives for job descriptions: submit every target's fragment torsion, collect profiles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openff.toolkit import Molecule

from bespoke_fractal.qc.identity import Dihedral
from bespoke_fractal.qc.specification import QCSpec
from bespoke_fractal.qc.torsiondrive import TorsionDrive, TorsionDriveResult, TorsionDriveStage
from bespoke_fractal.workflow.schema import BespokeOptimizationSchema


def submit_targets(
    stage: TorsionDriveStage, schemas: Iterable[BespokeOptimizationSchema]
) -> list[TorsionDrive]:
    """Submit the drive of every target of every job; a torsion shared by several targets or
    jobs is one drive (the server keeps one entry per torsion identity and spec)."""
    by_spec: dict[str, tuple[QCSpec, dict[str, tuple[Molecule, Dihedral]]]] = {}
    for schema in schemas:
        spec, torsions = by_spec.setdefault(schema.qc_spec.dataset_name, (schema.qc_spec, {}))
        for target in schema.targets:
            if target.identity.key not in torsions:
                fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
                torsions[target.identity.key] = (fragment, target.fragment_dihedral)
    # one dataset lookup and one submission per QC spec, however many targets
    return [
        drive
        for spec, torsions in by_spec.values()
        for drive in stage.submit_many(list(torsions.values()), spec)
    ]


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
