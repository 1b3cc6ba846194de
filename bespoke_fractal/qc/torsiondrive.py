"""The QC stage: 1-D torsion drives submitted as QCFractal TorsiondriveDatasets, deduplicated.

One dataset per QC specification (:attr:`QCSpec.dataset_name`), one entry per canonical torsion
(:attr:`TorsionIdentity.key`), starting geometries generated from the identity alone. The same
torsion under the same spec therefore always maps to the same entry and the same QCFractal
record, whoever submits it and from whatever input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from openff.toolkit import Molecule
from openff.units import unit

from bespoke_fractal.errors import TorsionDriveError
from bespoke_fractal.qc.programs import energy_check_for
from bespoke_fractal.qc.progress import DriveProgress
from bespoke_fractal.schema.drives import GridPoint, TorsionDrive, TorsionDriveResult, grid_angles, json_key
from bespoke_fractal.schema.identity import (
    canonicalize_torsion,
    starting_geometries,
)
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.schema.units import BOHR_TO_ANGSTROM, KCAL_PER_HARTREE
from bespoke_fractal.server.records import FINISHED, record_status

if TYPE_CHECKING:
    from qcportal import PortalClient


# qcengine error types that a retry cannot cure
PERMANENT_ERRORS = {"input_error", "inputerror", "method_error", "unknown_method"}
PERMANENT_PHRASES = ("not available", "not supported", "unknown method", "invalid", "not found")


def to_qcportal_molecule(molecule: Molecule, geometry_angstrom: np.ndarray):
    """A qcportal Molecule with integer (Kekulé) bond orders, as rdkit's harness needs."""
    from qcportal.molecules import Molecule as PortalMolecule

    copy = Molecule(molecule)
    copy._conformers = None
    copy.add_conformer(unit.Quantity(np.asarray(geometry_angstrom), unit.angstrom))
    schema = copy.to_qcschema(conformer=0)
    data = schema.model_dump() if hasattr(schema, "model_dump") else schema.dict()
    data.pop("provenance", None)
    data.pop("id", None)
    return PortalMolecule(**data)


def _error_line(record) -> tuple[str, bool]:
    """One clear line for an errored drive (the child optimisation's real message if any) and
    whether the failure is permanent."""
    messages: list[tuple[str, str]] = []
    try:
        for optimizations in (record.optimizations or {}).values():
            for opt in optimizations:
                if record_status(opt) == "error" and opt.error:
                    messages.append((opt.error.get("error_type", ""), opt.error.get("error_message", "")))
    except Exception:  # noqa: BLE001 - children may be unreadable; fall back to the parent
        pass
    error = record.error or {}
    if not messages:
        messages.append((error.get("error_type", ""), error.get("error_message", "")))
    error_type, message = messages[0]
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    informative = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "~"))]
    line = informative[-1] if informative else (error_type or "unknown error")
    permanent = error_type.lower() in PERMANENT_ERRORS or any(
        phrase in (message or "").lower() for phrase in PERMANENT_PHRASES
    )
    return f"{error_type or 'error'}: {line}"[:400], permanent


class DriveMonitor:
    """Statuses of many drive records, one query per poll; errored records are reset up to
    ``max_resets`` times each unless the error is permanent, then reported with one line."""

    def __init__(self, client: PortalClient, max_resets: int = 2, stall_seconds: float = 120.0) -> None:
        self.client = client
        self.max_resets = max_resets
        self.stall_seconds = stall_seconds
        self.resets: dict[int, int] = {}
        self.errors: dict[int, str] = {}
        self.revived: dict[int, int] = {}
        self._quiet_since: dict[int, float] = {}
        self.on_note: Callable[[str], None] = lambda _text: None

    def poll(self, record_ids: Sequence[int]) -> dict[int, str]:
        """Status of each record after this poll's resets ("error" only when final)."""
        statuses: dict[int, str] = {}
        ids = sorted(set(record_ids))
        for start in range(0, len(ids), 500):
            for record in self.client.get_records(ids[start : start + 500]):
                statuses[record.id] = self._status(record)
        self._revive_stalled([i for i, status in statuses.items() if status == "running"])
        return statuses

    def _revive_stalled(self, running: list[int]) -> None:
        """A torsion drive whose service was cut off in its first iteration (the server died
        then) stays "running" with no state and no tasks for ever; QCFractal does not restart
        it. Cancelling and uncancelling it does; done at most ``max_resets + 1`` times each."""
        now = time.monotonic()
        for record_id in list(self._quiet_since):
            if record_id not in running:
                del self._quiet_since[record_id]
        due = []
        for record_id in running:
            since = self._quiet_since.setdefault(record_id, now)
            if now - since > self.stall_seconds:
                due.append(record_id)
        if not due:
            return
        for record in self.client.get_torsiondrives(due, include=["service"]):
            service = record.service
            self._quiet_since[record.id] = now
            stalled = service is not None and not service.service_state and not service.dependencies
            if not stalled or self.revived.get(record.id, 0) > self.max_resets:
                continue
            self.revived[record.id] = self.revived.get(record.id, 0) + 1
            self.client.cancel_records([record.id])
            self.client.uncancel_records([record.id])
            self.on_note(f"record {record.id}: its service had stalled with no tasks; restarted it")

    def _status(self, record) -> str:
        status = record_status(record)
        if status != "error" or record.id in self.errors:
            return status
        line, permanent = _error_line(record)
        done = self.resets.get(record.id, 0)
        if not permanent and done < self.max_resets:
            self.resets[record.id] = done + 1
            self.client.reset_records([record.id])
            self.on_note(f"record {record.id} errored ({line}); reset {done + 1}/{self.max_resets}")
            return "waiting"
        self.errors[record.id] = line
        self.on_note(f"record {record.id} failed: {line}")
        return "error"


class TorsionDriveStage:
    """Submit, wait for and read back torsion drives on one QCFractal server."""

    def __init__(self, client: PortalClient) -> None:
        self.client = client

    # -- submission ------------------------------------------------------------------------------
    def _dataset(self, spec: QCSpec):
        dataset = self.client.add_dataset(
            "torsiondrive",
            spec.dataset_name,
            description=f"bespoke-fractal torsion drives, {spec.label}, grid {spec.grid_spacing}",
            tagline="bespoke-fractal",
            existing_ok=True,
        )
        if spec.label not in dataset.specification_names:
            dataset.add_specification(spec.label, spec.to_qcportal(), description=spec.description)
        return dataset

    def submit(
        self, molecule: Molecule, dihedrals: Sequence[Sequence[int]], spec: QCSpec
    ) -> list[TorsionDrive]:
        """Submit one drive per dihedral (4 atom indices of ``molecule``); existing drives are
        reused, never recomputed. Returns one :class:`TorsionDrive` per dihedral, in order."""
        return self.submit_many([(molecule, dihedral) for dihedral in dihedrals], spec)

    def submit_many(
        self, torsions: Sequence[tuple[Molecule, Sequence[int]]], spec: QCSpec
    ) -> list[TorsionDrive]:
        """Like :meth:`submit` for (molecule, dihedral) pairs of several molecules, with one
        dataset lookup and one submission for all of them."""
        torsions = [canonicalize_torsion(molecule, dihedral) for molecule, dihedral in torsions]
        dataset = self._dataset(spec)
        existing = set(dataset.entry_names)
        new_names: set[str] = set()
        for torsion in torsions:
            identity = torsion.identity
            if identity.key in existing or identity.key in new_names:
                continue
            canonical = identity.to_molecule()
            molecules = [
                to_qcportal_molecule(canonical, geometry)
                for geometry in starting_geometries(identity, spec.n_conformers)
            ]
            dataset.add_entry(
                identity.key,
                molecules,
                additional_keywords={
                    "dihedrals": [list(identity.dihedral)],
                    "grid_spacing": [spec.grid_spacing],
                },
                attributes={
                    "canonical_isomeric_explicit_hydrogen_mapped_smiles": identity.mapped_smiles,
                    "dihedral": list(identity.dihedral),
                    "submitted_by": "bespoke-fractal",
                },
            )
            new_names.add(identity.key)
        keys = sorted({t.identity.key for t in torsions})
        dataset.submit(entry_names=keys, specification_names=[spec.label], compute_tag=spec.compute_tag)
        record_ids = {
            entry: record.id
            for entry, _spec, record in dataset.iterate_records(
                entry_names=keys, specification_names=[spec.label]
            )
        }
        missing = [k for k in keys if k not in record_ids]
        if missing:
            raise TorsionDriveError(f"the server made no record for {len(missing)} torsion drive(s)")
        return [
            TorsionDrive(
                record_id=record_ids[t.identity.key],
                dataset_name=spec.dataset_name,
                entry_name=t.identity.key,
                spec=spec,
                torsion=t,
                new_entry=t.identity.key in new_names,
            )
            for t in torsions
        ]

    # -- waiting ---------------------------------------------------------------------------------
    def wait(
        self,
        drives: Sequence[TorsionDrive],
        *,
        timeout: float | None = None,
        max_resets: int = 2,
        poll_interval: float = 2.0,
        progress: bool | None = None,
    ) -> list[TorsionDriveResult]:
        """Wait until every drive is complete or has failed for good.

        Errored drives are reset up to ``max_resets`` times unless the error is permanent.
        Drives still unfinished after ``timeout`` seconds are returned with an error line.
        """
        ids = sorted({d.record_id for d in drives})
        monitor = DriveMonitor(self.client, max_resets=max_resets)
        deadline = None if timeout is None else time.monotonic() + timeout
        with DriveProgress(len(ids), enabled=progress) as bar:
            monitor.on_note = bar.note
            while True:
                statuses = monitor.poll(ids)
                counts: dict[str, int] = {}
                for status in statuses.values():
                    counts[status] = counts.get(status, 0) + 1
                bar.update(counts)
                unfinished = {i: s for i, s in statuses.items() if s not in FINISHED}
                if not unfinished:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    for record_id, status in unfinished.items():
                        monitor.errors[record_id] = f"not finished after {timeout:.0f} s (status {status})"
                    break
                time.sleep(poll_interval)
        return self.results(drives, errors=monitor.errors, resets=monitor.resets)

    # -- reading results -------------------------------------------------------------------------
    def results(
        self,
        drives: Sequence[TorsionDrive],
        *,
        errors: dict[int, str] | None = None,
        resets: dict[int, int] | None = None,
    ) -> list[TorsionDriveResult]:
        """Current state of each drive; complete ones carry their checked torsion profile."""
        errors = dict(errors or {})
        resets = resets or {}
        records = {r.id: r for r in self.client.get_torsiondrives(sorted({d.record_id for d in drives}))}
        out = []
        for drive in drives:
            record = records[drive.record_id]
            status = record_status(record)
            if status == "error" and drive.record_id not in errors:
                errors[drive.record_id] = _error_line(record)[0]
            result = TorsionDriveResult(
                record_id=drive.record_id,
                status=status,
                spec=drive.spec,
                identity_key=drive.entry_name,
                dataset_name=drive.dataset_name,
                requested_dihedral=drive.requested_dihedral,
                driven_dihedral=drive.driven_dihedral,
                error=errors.get(drive.record_id),
                resets=resets.get(drive.record_id, 0),
            )
            if status in ("complete", "error"):
                try:
                    grid, note = self._profile(drive, record, partial=status == "error")
                    result.grid, result.energy_note = grid, note
                except TorsionDriveError as exc:
                    if status == "complete":
                        result.error = str(exc)
                if status == "error":
                    done = {point.angle for point in result.grid}
                    result.missing_angles = [a for a in grid_angles(drive.spec.grid_spacing) if a not in done]
            out.append(result)
        return out

    def _profile(
        self, drive: TorsionDrive, record, partial: bool = False
    ) -> tuple[list[GridPoint], str | None]:
        """The lowest-energy optimisation of each grid point; for a drive that failed part-way
        (``partial``) from the optimisations that did complete."""
        if partial:
            minimum = {}
            for key, optimizations in (record.optimizations or {}).items():
                done = [o for o in optimizations if record_status(o) == "complete"]
                if done:
                    minimum[key] = min(done, key=lambda o: o.energies[-1])
            if not minimum:
                return [], None
        else:
            minimum = record.minimum_optimizations
        keys = sorted(minimum, key=lambda key: int(json_key(key)[0]))
        opt_ids = [minimum[key].id for key in keys]
        optimizations = {o.id: o for o in self.client.get_optimizations(opt_ids, include=["final_molecule"])}
        canonical = drive.torsion.identity.to_molecule()
        geometries = [
            np.asarray(optimizations[i].final_molecule.geometry).reshape(-1, 3) * BOHR_TO_ANGSTROM
            for i in opt_ids
        ]
        raw = [float(optimizations[i].energies[-1]) for i in opt_ids]
        check = energy_check_for(drive.spec.program).check_energies(drive.spec, canonical, geometries, raw)
        hartree = [e * check.scale for e in raw]
        lowest = min(hartree)
        order = drive.torsion.canonical_to_input
        grid = []
        for key, opt_id, geometry, energy in zip(keys, opt_ids, geometries, hartree, strict=True):
            in_input_order = np.empty_like(geometry)
            in_input_order[order] = geometry
            grid.append(
                GridPoint(
                    angle=int(json_key(key)[0]),
                    energy_hartree=energy,
                    energy_kcal_mol=energy * KCAL_PER_HARTREE,
                    relative_energy_kcal_mol=(energy - lowest) * KCAL_PER_HARTREE,
                    geometry_angstrom=in_input_order.tolist(),
                    optimization_id=opt_id,
                )
            )
        return grid, check.note

    def run(
        self,
        molecule: Molecule,
        dihedrals: Sequence[Sequence[int]],
        spec: QCSpec,
        **wait_options: Any,
    ) -> list[TorsionDriveResult]:
        """Submit and wait: the whole QC stage for one molecule."""
        return self.wait(self.submit(molecule, dihedrals, spec), **wait_options)
