"""Read completed torsion drives from a QCFractal server into a :class:`DriveArchive`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel, Field

from bespoke_fractal.cache.archive import (
    ArchivedDrive,
    ArchivedOptimization,
    CacheError,
    DriveArchive,
    DriveSpecification,
)
from bespoke_fractal.cache.atoms import canonical_order, reorder
from bespoke_fractal.errors import first_line
from bespoke_fractal.schema.qc import QCSpec, get_preset, list_presets
from bespoke_fractal.server.records import record_status

if TYPE_CHECKING:
    from qcportal import PortalClient

MAPPED_SMILES = "canonical_isomeric_explicit_hydrogen_mapped_smiles"
BATCH = 200


class SourceSelection(BaseModel):
    """Which drives to read: whole datasets, record ids, or both."""

    datasets: list[str] = Field(default_factory=list)
    record_ids: list[int] = Field(default_factory=list)


class RefusedDrive(BaseModel):
    """A drive that was not imported (or not read), and why, in one line."""

    source: str
    source_record_id: int | None = None
    identity_key: str | None = None
    reason: str


def preset_datasets(client: PortalClient, preset: str, grid_spacing: int | None = None) -> list[str]:
    """Names of this project's torsiondrive datasets on the server whose spec is ``preset``'s
    (any grid spacing and number of conformers unless ``grid_spacing`` is given)."""
    get_preset(preset)  # unknown presets: one clear line
    names = []
    for info in client.list_datasets():
        name = info["dataset_name"]
        match = re.match(r"bespoke-fractal td \S+ grid(\d+) conf(\d+) \[", name)
        if info["dataset_type"] != "torsiondrive" or not match:
            continue
        grid, conformers = int(match[1]), int(match[2])
        if grid_spacing is not None and grid != grid_spacing:
            continue
        try:
            spec = get_preset(preset, grid_spacing=grid, n_conformers=conformers)
        except ValueError:
            continue
        if spec.dataset_name == name:
            names.append(name)
    return names


def read_server_drives(
    client: PortalClient, selection: SourceSelection, source: str, *, gradients: bool = True
) -> tuple[DriveArchive, list[RefusedDrive]]:
    """The complete 1-D drives named by ``selection``; the others are returned as refused.

    ``gradients`` also copies each optimisation's final gradient (one more query per batch).
    """
    entry_names: dict[int, str] = {}
    for name in selection.datasets:
        for entry, _spec, record in _dataset(client, name, source).iterate_records():
            entry_names.setdefault(record.id, entry)
    ids = list(dict.fromkeys([*entry_names, *selection.record_ids]))
    if not ids:
        raise CacheError(f"no torsion drives selected on {source}")
    drives, refused = [], []
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        try:
            records = client.get_torsiondrives(chunk, missing_ok=True, include=["initial_molecules"])
        except Exception as exc:  # noqa: BLE001 - qcportal raises several types
            raise CacheError(f"cannot read records from {source}: {first_line(exc)}") from None
        for record_id, record in zip(chunk, records, strict=True):
            if record is None:
                refused.append(
                    RefusedDrive(source=source, source_record_id=record_id, reason="no such torsion drive")
                )
                continue
            try:
                drives.append(_drive(client, record, source, entry_names.get(record_id), gradients))
            except CacheError as exc:
                refused.append(RefusedDrive(source=source, source_record_id=record_id, reason=str(exc)))
    return DriveArchive(drives=drives), refused


def _dataset(client: PortalClient, name: str, source: str):
    try:
        return client.get_dataset("torsiondrive", name)
    except Exception as exc:  # noqa: BLE001
        text = first_line(exc)
        if "could not find" in text.lower():
            raise CacheError(f"no torsion drive dataset named '{name}' on {source}") from None
        raise CacheError(f"cannot read dataset '{name}' from {source}: {text}") from None


def _drive(client: PortalClient, record, source: str, entry: str | None, gradients: bool) -> ArchivedDrive:
    status = record_status(record)
    if status != "complete":
        raise CacheError(f"status {status}: only complete drives are imported")
    spec = DriveSpecification.from_qcportal(record.specification, len(record.initial_molecules))
    first = record.initial_molecules[0]
    molecule = _molecule(first)
    dihedral = tuple(int(i) for i in record.specification.keywords.dihedrals[0])
    identity, order = canonical_order(molecule, dihedral)
    optimizations = _optimizations(client, record, order, gradients)
    if not optimizations:
        raise CacheError("no completed optimisation")
    return ArchivedDrive(
        source=source,
        source_record_id=record.id,
        entry_name=entry,
        mapped_smiles=identity.mapped_smiles,
        dihedral=identity.dihedral,
        molecular_multiplicity=int(first.molecular_multiplicity or 1),
        spec=spec,
        final_energies={int(key[0]): float(value) for key, value in (record.final_energies or {}).items()},
        optimizations=optimizations,
    )


def _molecule(portal_molecule) -> Molecule:
    """The source molecule with its atoms in the source's order (from its mapped SMILES)."""
    identifiers = portal_molecule.identifiers
    smiles = getattr(identifiers, MAPPED_SMILES, None) if identifiers else None
    smiles = smiles or (portal_molecule.extras or {}).get(MAPPED_SMILES)
    if not smiles:
        raise CacheError("its molecule carries no mapped SMILES, so its atoms cannot be identified")
    try:
        molecule = Molecule.from_mapped_smiles(smiles, allow_undefined_stereo=True)
    except Exception as exc:  # noqa: BLE001 - toolkit errors vary
        raise CacheError(f"its mapped SMILES cannot be read: {first_line(exc)}") from None
    symbols = [atom.symbol for atom in molecule.atoms]
    if symbols != [str(s) for s in portal_molecule.symbols]:
        raise CacheError("its mapped SMILES does not match the molecule's atoms")
    return molecule


def _optimizations(
    client: PortalClient, record, order: Sequence[int], gradients: bool
) -> list[ArchivedOptimization]:
    angle_of = {}
    for key, optimizations in (record.optimizations or {}).items():
        for optimization in optimizations:
            angle_of[optimization.id] = int(key[0] if isinstance(key, tuple) else key)
    include = ["initial_molecule", "final_molecule", "compute_history"]
    if gradients:
        include.append("trajectory")
    out = []
    for records in _batches(list(angle_of), BATCH):
        for optimization in client.get_optimizations(records, include=include):
            if record_status(optimization) != "complete" or not optimization.energies:
                continue
            gradient, gradient_provenance = None, None
            if gradients and optimization.trajectory:
                last = optimization.trajectory[-1]
                if last.return_result is not None and np.size(last.return_result) == 3 * len(order):
                    gradient = reorder(last.return_result, order).tolist()
                    gradient_provenance = _provenance(last)
            out.append(
                ArchivedOptimization(
                    angle=angle_of[optimization.id],
                    source_record_id=optimization.id,
                    initial_geometry_bohr=reorder(optimization.initial_molecule.geometry, order).tolist(),
                    final_geometry_bohr=reorder(optimization.final_molecule.geometry, order).tolist(),
                    energies=[float(e) for e in optimization.energies],
                    final_gradient=gradient,
                    provenance=_provenance(optimization) or {},
                    gradient_provenance=gradient_provenance,
                )
            )
    return sorted(out, key=lambda o: (o.angle, o.source_record_id))


def _provenance(record) -> dict | None:
    history = record.compute_history
    if not history or history[-1].provenance is None:
        return None
    return history[-1].provenance.model_dump(mode="json")


def _batches(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def matching_preset(spec: DriveSpecification):
    """The preset whose science equals ``spec`` at ``spec``'s grid spacing, or None."""
    for preset in list_presets():
        try:
            candidate = QCSpec(**{**preset.model_dump(), "grid_spacing": spec.grid_spacing})
        except ValueError:
            continue
        if not spec.differences(candidate):
            return candidate
    return None
