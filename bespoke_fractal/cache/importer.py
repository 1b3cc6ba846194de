"""Import archived drives into a destination server: check, submit, replay, report."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from openff.toolkit import Molecule
from pydantic import BaseModel, Field

from bespoke_fractal.cache.archive import ArchivedDrive, CacheError, DriveArchive
from bespoke_fractal.cache.atoms import canonical_order
from bespoke_fractal.cache.replay import ReplayDrive, ReplayManager
from bespoke_fractal.cache.source import RefusedDrive, matching_preset
from bespoke_fractal.errors import first_line
from bespoke_fractal.qc.torsiondrive import TorsionDriveStage
from bespoke_fractal.schema.drives import TorsionDrive
from bespoke_fractal.schema.qc import QCSpec, get_preset
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.server.records import record_status

if TYPE_CHECKING:
    from qcportal import PortalClient


class ImportedDrive(BaseModel):
    """A drive the destination now holds, complete."""

    source: str
    source_record_id: int
    identity_key: str
    dataset_name: str
    record_id: int = Field(description="the destination's torsiondrive record")
    replayed_tasks: int = 0


class FailedDrive(BaseModel):
    """A drive submitted to the destination that did not complete from the source's results."""

    source: str
    source_record_id: int
    identity_key: str
    record_id: int
    error: str


class ImportReport(BaseModel):
    """The outcome of one import."""

    destination: str
    compute_tag: str | None = Field(None, description="the replay's one-off compute tag, if it ran")
    imported: list[ImportedDrive] = Field(default_factory=list)
    already_present: list[ImportedDrive] = Field(default_factory=list)
    refused: list[RefusedDrive] = Field(default_factory=list)
    failed: list[FailedDrive] = Field(default_factory=list)
    replayed_tasks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed

    def summary(self) -> str:
        return (
            f"{len(self.imported)} imported, {len(self.already_present)} already present, "
            f"{len(self.refused)} refused, {len(self.failed)} failed "
            f"({self.replayed_tasks} optimisations replayed, {self.seconds:.1f} s)"
        )


def target_spec(drive: ArchivedDrive, preset: QCSpec | str | None) -> QCSpec | None:
    """The spec a drive is imported under: ``preset`` as given (a QCSpec), the named preset at the
    drive's grid spacing (a name), or the preset whose science matches (None)."""
    if isinstance(preset, QCSpec):
        return preset
    if isinstance(preset, str):
        try:
            return get_preset(preset, grid_spacing=drive.spec.grid_spacing)
        except ValueError:
            return get_preset(preset)
    return matching_preset(drive.spec)


def _prepare(
    archive: DriveArchive, preset: QCSpec | str | None, refused: list[RefusedDrive]
) -> dict[str, tuple[QCSpec, list[ReplayDrive]]]:
    """Accepted drives grouped by destination dataset; the others go to ``refused``."""
    groups: dict[str, tuple[QCSpec, list[ReplayDrive]]] = {}
    seen: set[tuple[str, str]] = set()
    for drive in archive.drives:
        spec = target_spec(drive, preset)
        if spec is None:
            reason = (
                f"its specification ({drive.spec.program} {drive.spec.method}) matches no preset; name one"
            )
            refused.append(
                RefusedDrive(source=drive.source, source_record_id=drive.source_record_id, reason=reason)
            )
            continue
        differences = drive.spec.differences(spec)
        if differences:
            reason = f"specification differs from preset {spec.name}: " + "; ".join(differences)
            refused.append(
                RefusedDrive(source=drive.source, source_record_id=drive.source_record_id, reason=reason)
            )
            continue
        try:
            molecule = Molecule.from_mapped_smiles(drive.mapped_smiles, allow_undefined_stereo=True)
            identity, order = canonical_order(molecule, drive.dihedral)
        except (CacheError, ValueError) as exc:
            refused.append(
                RefusedDrive(
                    source=drive.source, source_record_id=drive.source_record_id, reason=first_line(exc)
                )
            )
            continue
        if (spec.dataset_name, identity.key) in seen:
            refused.append(
                RefusedDrive(
                    source=drive.source,
                    source_record_id=drive.source_record_id,
                    identity_key=identity.key,
                    reason="another drive of the same torsion and specification comes first",
                )
            )
            continue
        seen.add((spec.dataset_name, identity.key))
        groups.setdefault(spec.dataset_name, (spec, []))[1].append(
            ReplayDrive(archived=drive, identity=identity, order=order)
        )
    return groups


def _present(client: PortalClient, spec: QCSpec, drives: list[ReplayDrive]) -> dict[str, int]:
    """Identity key -> record id of the drives already complete in the destination's dataset."""
    try:
        dataset = client.get_dataset("torsiondrive", spec.dataset_name)
    except Exception:  # noqa: BLE001 - no such dataset yet
        return {}
    keys = set(dataset.entry_names) & {d.identity.key for d in drives}
    if not keys or spec.label not in dataset.specification_names:
        return {}
    return {
        entry: record.id
        for entry, _spec, record in dataset.iterate_records(
            entry_names=sorted(keys), specification_names=[spec.label]
        )
        if record_status(record) == "complete"
    }


def check_no_wildcard_managers(client: PortalClient, address: str, compute_tag: str) -> None:
    """Refuse when an active manager of the destination could claim ``compute_tag``'s tasks."""
    takers = [
        m.name
        for m in client.query_managers(status="active")
        if "*" in m.compute_tags or compute_tag in m.compute_tags
    ]
    if takers:
        raise CacheError(
            f"stop the compute managers of {address} first: {len(takers)} active manager(s) take any "
            f"compute tag ({', '.join(takers[:3])}{', ...' if len(takers) > 3 else ''}) and would "
            "compute the imported drives instead of replaying them"
        )


def import_drives(
    archive: DriveArchive,
    destination: ServerConnection,
    compute: ServerConnection | None = None,
    preset: QCSpec | str | None = None,
    *,
    refused: Iterable[RefusedDrive] = (),
    stall_timeout: float = 300.0,
    poll_interval: float = 0.5,
    on_note: Callable[[str], None] = lambda _text: None,
) -> ImportReport:
    """Bring ``archive``'s drives onto ``destination`` so fits find them by their torsion identity.

    ``destination`` submits (submit or admin role); ``compute`` runs the replay manager (compute
    or admin role; default: ``destination``). ``preset`` is a QCSpec (used exactly), a preset
    name (at each drive's grid spacing) or None (the preset whose specification matches).
    """
    start = time.monotonic()
    report = ImportReport(destination=destination.address, refused=list(refused))
    groups = _prepare(archive, preset, report.refused)
    if not groups:
        report.seconds = time.monotonic() - start
        return report
    client = destination.client()
    pending: list[tuple[QCSpec, list[ReplayDrive]]] = []
    for spec, drives in groups.values():
        present = _present(client, spec, drives)
        for drive in drives:
            if drive.identity.key in present:
                report.already_present.append(_imported(drive, spec, present[drive.identity.key]))
        rest = [d for d in drives if d.identity.key not in present]
        if rest:
            pending.append((spec, rest))
    if not pending:
        report.seconds = time.monotonic() - start
        return report

    tag = f"bespoke-replay-{uuid.uuid4().hex[:12]}"
    check_no_wildcard_managers(client, destination.address, tag)
    stage = TorsionDriveStage(client)
    submitted: list[tuple[QCSpec, ReplayDrive, TorsionDrive]] = []
    for spec, drives in pending:
        tagged = spec.model_copy(update={"compute_tag": tag})
        molecules = [
            (
                Molecule.from_mapped_smiles(d.archived.mapped_smiles, allow_undefined_stereo=True),
                d.archived.dihedral,
            )
            for d in drives
        ]
        for drive, submission in zip(drives, stage.submit_many(molecules, tagged), strict=True):
            drive.record_id = submission.record_id
            submitted.append((spec, drive, submission))
    statuses = {r.id: record_status(r) for r in client.get_records([d.record_id for _, d, _ in submitted])}
    to_replay = []
    for spec, drive, _submission in submitted:
        if statuses[drive.record_id] == "complete":
            report.already_present.append(_imported(drive, spec, drive.record_id))
        else:
            to_replay.append((spec, drive))
    report.compute_tag = tag if to_replay else None
    if to_replay:
        _replay(
            client,
            compute or destination,
            tag,
            to_replay,
            statuses,
            report,
            stall_timeout,
            poll_interval,
            on_note,
        )
    report.seconds = time.monotonic() - start
    return report


def _replay(client, compute, tag, to_replay, statuses, report, stall_timeout, poll_interval, on_note) -> None:
    ids = [d.record_id for _, d in to_replay]
    # records that existed already (another dataset, an earlier submission) keep their own tag
    client.modify_records(ids, new_compute_tag=tag)
    errored = [i for i in ids if statuses.get(i) == "error"]
    if errored:
        client.reset_records(errored)
    programs = {"geometric", "qcengine"} | {spec.program for spec, _ in to_replay}
    manager = ReplayManager(compute, client, tag, sorted(programs), on_note=on_note)
    outcome = None
    try:
        outcome = manager.run(
            [d for _, d in to_replay], stall_timeout=stall_timeout, poll_interval=poll_interval
        )
    finally:
        final = {r.id: record_status(r) for r in client.get_records(ids)}
        unfinished = [i for i in ids if final[i] != "complete"]
        for spec, drive in to_replay:
            if drive.record_id in unfinished:
                # the one-off tag would strand the rest of the drive: hand it back to ordinary managers
                client.modify_records([drive.record_id], new_compute_tag=spec.compute_tag)
    report.replayed_tasks = outcome.answered
    stage = TorsionDriveStage(client)
    for spec, drive in to_replay:
        result = stage.results([_as_drive(drive, spec)])[0]
        if result.ok:
            report.imported.append(_imported(drive, spec, drive.record_id))
            continue
        error = result.error or f"status {result.status}"
        if outcome.stalled and result.status not in ("complete", "error"):
            error = (
                f"not complete after replay (status {result.status}; no progress for {stall_timeout:.0f} s)"
            )
        report.failed.append(
            FailedDrive(
                source=drive.archived.source,
                source_record_id=drive.archived.source_record_id,
                identity_key=drive.identity.key,
                record_id=drive.record_id,
                error=error,
            )
        )


def _as_drive(drive: ReplayDrive, spec: QCSpec) -> TorsionDrive:
    from bespoke_fractal.schema.identity import canonicalize_torsion

    molecule = drive.identity.to_molecule()
    return TorsionDrive(
        record_id=drive.record_id,
        dataset_name=spec.dataset_name,
        entry_name=drive.identity.key,
        spec=spec,
        torsion=canonicalize_torsion(molecule, drive.identity.dihedral),
        new_entry=False,
    )


def _imported(drive: ReplayDrive, spec: QCSpec, record_id: int) -> ImportedDrive:
    return ImportedDrive(
        source=drive.archived.source,
        source_record_id=drive.archived.source_record_id,
        identity_key=drive.identity.key,
        dataset_name=spec.dataset_name,
        record_id=record_id,
        replayed_tasks=drive.answered,
    )
