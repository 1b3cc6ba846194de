"""QC drives for job descriptions: submit every target's fragment torsion (and, with
``drive_parent``, the same bond on the whole parent), collect profiles."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from openff.toolkit import Molecule

from bespoke_fractal.errors import ServerError, first_line
from bespoke_fractal.optimization.profiles import dihedral_degrees
from bespoke_fractal.optimization.stage import profile_from_result
from bespoke_fractal.qc.torsiondrive import TorsionDriveStage
from bespoke_fractal.schema.drives import TorsionDrive, TorsionDriveResult
from bespoke_fractal.schema.fits import TorsionProfile
from bespoke_fractal.schema.identity import Dihedral, canonicalize_torsion
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema

log = logging.getLogger(__name__)

Torsion = tuple[Molecule, Dihedral]
DriveKey = tuple[str, str]
"""(dataset name, torsion identity key): where a drive lives on the server."""

MAX_DIHEDRAL_ERROR = 1.0
"""Degrees a parent geometry's driven dihedral may differ from its grid angle (a check that the
geometry is in the parent's atom order)."""
MAX_BOND_ANGSTROM = 2.6
"""Longest bond a parent geometry may have (the same check)."""


def submit_targets(
    stage: TorsionDriveStage, schemas: Iterable[BespokeOptimizationSchema]
) -> list[TorsionDrive]:
    """Submit the drive of every target of every job; a torsion shared by several targets or
    jobs is one drive (the server keeps one entry per torsion identity and spec).

    Jobs with ``drive_parent`` also get the drive of each target bond on the whole parent, in
    the same dataset and spec. A parent drive that cannot be submitted (e.g. no conformer of a
    large parent) is logged and left out; it does not stop the fragment drives."""
    by_spec: dict[
        str, tuple[QCSpec, dict[str, tuple[Molecule, Dihedral]], dict[str, tuple[Molecule, Dihedral]]]
    ]
    by_spec = {}
    for schema in schemas:
        spec, torsions, parents = by_spec.setdefault(schema.qc_spec.dataset_name, (schema.qc_spec, {}, {}))
        for target in schema.targets:
            if target.identity.key not in torsions:
                fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
                torsions[target.identity.key] = (fragment, target.fragment_dihedral)
        if schema.drive_parent:
            parent = schema.parent_molecule()
            for _index, dihedral, identity in schema.parent_drives():
                parents.setdefault(identity.key, (parent, dihedral))
    drives = []
    # one dataset lookup and one submission per QC spec, however many targets
    for spec, torsions, parents in by_spec.values():
        extra = [torsion for key, torsion in parents.items() if key not in torsions]
        try:
            drives += stage.submit_many([*torsions.values(), *extra], spec)
        except ServerError:
            raise
        except Exception:
            if not extra:
                raise
            # the fragments alone (their failure is the job's), then each parent drive alone
            drives += stage.submit_many(list(torsions.values()), spec)
            for molecule, dihedral in extra:
                try:
                    drives += stage.submit_many([(molecule, dihedral)], spec)
                except ServerError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a parent drive is optional
                    smiles = molecule.to_smiles(explicit_hydrogens=False)
                    log.warning(
                        "drive of the parent %s %s not submitted: %s", smiles, dihedral, first_line(exc)
                    )
    return drives


def run_targets(
    stage: TorsionDriveStage, schemas: Iterable[BespokeOptimizationSchema], **wait_options: Any
) -> dict[tuple[str, str], TorsionDriveResult]:
    """Submit and wait; results keyed by (dataset name, torsion identity key).

    A drive shared by several of ``schemas`` has its geometries in the atom order of the first
    that submitted it; :func:`job_results` reads them in each job's own order."""
    drives = submit_targets(stage, list(schemas))
    results = stage.wait(drives, **wait_options)
    return {
        (drive.dataset_name, drive.torsion.identity.key): result
        for drive, result in zip(drives, results, strict=True)
    }


def bind_to_job(
    schema: BespokeOptimizationSchema, drives: Sequence[TorsionDrive]
) -> tuple[list[TorsionDrive], list[TorsionDrive]]:
    """This job's fragment drives and parent drives among ``drives``, each re-expressed in the
    job's own molecule (its fragment, or the parent), so that results read through them have
    geometries and dihedrals in that molecule's atom order.

    A drive is recorded once for every job of a submission that needs it, expressed in the atom
    order of the molecule it was first submitted with, which may be another job's fragment or
    parent (same canonical identity, other atom order). A drive this job does not name is left
    out; a parent drive is returned only when ``schema.drive_parent``.
    """
    by_key = {(d.dataset_name, d.entry_name): d for d in drives}
    dataset = schema.qc_spec.dataset_name
    fragment: dict[DriveKey, TorsionDrive] = {}
    for target in schema.targets:
        key = (dataset, target.identity.key)
        if key in by_key and key not in fragment:
            molecule = schema.fragmentation.fragments[target.fragment].to_molecule()
            fragment[key] = _rebound(by_key[key], molecule, target.fragment_dihedral)
    parent: dict[DriveKey, TorsionDrive] = {}
    if schema.drive_parent:
        molecule = schema.parent_molecule()
        for _index, dihedral, identity in schema.parent_drives():
            key = (dataset, identity.key)
            if key in by_key and key not in fragment and key not in parent:
                parent[key] = _rebound(by_key[key], molecule, dihedral)
    return list(fragment.values()), list(parent.values())


def _rebound(drive: TorsionDrive, molecule: Molecule, dihedral: Dihedral) -> TorsionDrive:
    torsion = canonicalize_torsion(molecule, dihedral)
    if torsion.identity.key != drive.entry_name:  # another RDKit canonical order: keep the recorded one
        log.warning("drive %s: not the same identity from this job's molecule", drive.record_id)
        return drive
    return drive.model_copy(update={"torsion": torsion})


def job_results(
    stage: TorsionDriveStage, schema: BespokeOptimizationSchema, drives: Sequence[TorsionDrive]
) -> tuple[dict[DriveKey, TorsionDriveResult], dict[DriveKey, TorsionDriveResult]]:
    """The current results of one job's drives, read in one query: (fragment results, parent
    results), each keyed by (dataset name, torsion identity key), in the job's own atom orders
    (:func:`bind_to_job`). Fragment results go to ``usable_profiles``, parent results to
    :func:`parent_profiles`."""
    fragment, parent = bind_to_job(schema, drives)
    results = stage.results([*fragment, *parent]) if fragment or parent else []
    keyed = [((d.dataset_name, d.entry_name), r) for d, r in zip([*fragment, *parent], results, strict=True)]
    return dict(keyed[: len(fragment)]), dict(keyed[len(fragment) :])


def parent_profiles(
    schema: BespokeOptimizationSchema, results: Mapping[DriveKey, TorsionDriveResult]
) -> list[TorsionProfile]:
    """The QC profile of each target's parent drive that is complete, in the parent's atom order.

    ``results`` are keyed by (dataset name, torsion identity key) and must be read through
    drives bound to the parent (:func:`job_results`). Each profile has ``target_index``, the
    parent's mapped SMILES, the driven dihedral in parent atom indices, the grid angles,
    energies in kcal/mol relative to the lowest and the optimised geometries in parent atom
    order. A drive that failed, even part-way, gives no profile (the parent is then not scored);
    so does a result whose geometries are not in the parent's atom order (logged).
    """
    if not schema.drive_parent:
        return []
    parent = schema.parent_molecule()
    bonds = np.array([(b.atom1_index, b.atom2_index) for b in parent.bonds])
    profiles = []
    for index, _dihedral, identity in schema.parent_drives():
        result = results.get((schema.qc_spec.dataset_name, identity.key))
        if result is None or not result.ok or not result.grid:
            continue
        grid = sorted(result.grid, key=lambda point: point.angle)
        geometries = [np.asarray(point.geometry_angstrom) for point in grid]
        problem = _order_problem(geometries, [p.angle for p in grid], result.driven_dihedral, bonds, parent)
        if problem:
            log.warning("parent drive %s of %s not used: %s", result.record_id, schema.id, problem)
            continue
        profiles.append(profile_from_result(index, schema.smiles, result))
    return profiles


def _order_problem(
    geometries: list[np.ndarray], angles: list[int], dihedral: Dihedral, bonds: np.ndarray, parent: Molecule
) -> str | None:
    """Why these geometries are not the parent's in its own atom order, or None."""
    for geometry, angle in zip(geometries, angles, strict=True):
        if geometry.shape != (parent.n_atoms, 3):
            return f"{geometry.shape[0]} atoms, the parent has {parent.n_atoms}"
        if (
            len(bonds)
            and np.linalg.norm(geometry[bonds[:, 0]] - geometry[bonds[:, 1]], axis=1).max()
            > MAX_BOND_ANGSTROM
        ):
            return "a bond of the parent is broken in its geometry (atom order?)"
        error = abs((dihedral_degrees(geometry, dihedral) - angle + 180.0) % 360.0 - 180.0)
        if error > MAX_DIHEDRAL_ERROR:
            return f"the driven dihedral is {error:.1f}° off its grid angle {angle}° (atom order?)"
    return None
