"""The replay compute manager: answers a server's optimisation tasks from archived results.

It registers with the destination like any compute manager (qcportal's ``ManagerClient``), but
only for one compute tag that nothing else uses, claims the constrained optimisations that the
destination's torsiondrive services create for the imported drives, and returns for each an
``OptimizationResult`` built from the source's optimisation at the same grid angle. Nothing is
computed; the records say so in their provenance.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from bespoke_fractal.cache.archive import ArchivedDrive, ArchivedOptimization, CacheError, package_version
from bespoke_fractal.cache.atoms import reorder
from bespoke_fractal.errors import first_line
from bespoke_fractal.schema.identity import TorsionIdentity
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.server.records import FINISHED, record_status

if TYPE_CHECKING:
    from qcportal import PortalClient

MATCH_BOHR = 1e-3
"""Largest coordinate difference (bohr) for a task's initial geometry to count as the source's."""
CLAIM_LIMIT = 50


@dataclass
class ReplayDrive:
    """An archived drive, mapped onto the destination's canonical atom order."""

    archived: ArchivedDrive
    identity: TorsionIdentity
    order: list[int]
    """``order[i]``: the archive atom that is canonical atom ``i`` on the destination."""
    record_id: int = -1
    answered: int = 0
    _by_angle: dict[int, list[tuple[ArchivedOptimization, np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for optimization in self.archived.optimizations:
            initial = reorder(optimization.initial_geometry_bohr, self.order)
            self._by_angle.setdefault(optimization.angle, []).append((optimization, initial))

    def choose(self, angle: int, initial: np.ndarray) -> tuple[ArchivedOptimization, str] | None:
        """The source optimisation for a task at ``angle`` starting from ``initial`` (bohr, canonical
        order): the one with the same initial geometry, else the lowest-energy one."""
        candidates = self._by_angle.get(angle, [])
        if not candidates:
            return None
        for optimization, start in candidates:
            if start.shape == initial.shape and np.max(np.abs(start - initial)) < MATCH_BOHR:
                return optimization, "same initial geometry"
        return min(candidates, key=lambda c: c[0].energies[-1])[0], "lowest energy at this grid angle"


class ReplayOutcome(BaseModel):
    """What the replay manager did."""

    answered: int = 0
    failed: int = 0
    rejected: int = 0
    statuses: dict[int, str] = {}
    stalled: bool = False
    seconds: float = 0.0


class ReplayManager:
    """A compute manager, in this process, that replays archived optimisations for one tag."""

    def __init__(
        self,
        compute: ServerConnection,
        reader: PortalClient,
        compute_tag: str,
        programs: Sequence[str],
        on_note: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self.compute = compute
        self.reader = reader
        self.compute_tag = compute_tag
        self.programs = {p.lower(): ["replay"] for p in programs}
        self.on_note = on_note
        self._drive_of: dict[int, ReplayDrive] = {}

    def _client(self):
        from qcportal.exceptions import AuthenticationFailure
        from qcportal.manager_client import ManagerClient
        from qcportal.managers import ManagerName

        self.compute.check_reachable()
        name = ManagerName(cluster="bespoke-replay", hostname=socket.gethostname(), uuid=str(uuid.uuid4()))
        password = self.compute.password.get_secret_value() if self.compute.password else None
        try:
            return ManagerClient(
                name, self.compute.address, self.compute.username, password, self.compute.verify
            )
        except AuthenticationFailure:
            raise CacheError(
                f"the server at {self.compute.address} rejected the compute account '{self.compute.username}'"
            ) from None

    def run(
        self, drives: Sequence[ReplayDrive], *, stall_timeout: float = 300.0, poll_interval: float = 0.5
    ) -> ReplayOutcome:
        """Answer tasks until every drive is finished, or nothing happened for ``stall_timeout`` s."""
        import qcportal

        start = time.monotonic()
        outcome = ReplayOutcome()
        by_record = {d.record_id: d for d in drives}
        client = self._client()
        try:
            client.activate(qcportal.__version__, self.programs, [self.compute_tag])
        except Exception as exc:  # noqa: BLE001 - a refused activation is a permissions problem
            raise CacheError(
                f"cannot register the replay manager on {self.compute.address} as "
                f"'{self.compute.username}' (needs the compute or admin role): {first_line(exc)}"
            ) from None
        heartbeat = float(client.server_info.get("manager_heartbeat_frequency", 60)) / 3
        last_beat = last_progress = time.monotonic()
        try:
            while True:
                statuses = self._statuses(list(by_record))
                if statuses != outcome.statuses:
                    last_progress = time.monotonic()
                outcome.statuses = statuses
                if all(s in FINISHED for s in statuses.values()):
                    break
                tasks = client.claim(self.programs, [self.compute_tag], CLAIM_LIMIT)
                if tasks:
                    self._answer(client, tasks, by_record, outcome)
                    last_progress = time.monotonic()
                if time.monotonic() - last_beat > heartbeat:
                    client.heartbeat(0, 0, 0.0, 0.0)
                    last_beat = time.monotonic()
                if time.monotonic() - last_progress > stall_timeout:
                    outcome.stalled = True
                    break
                if not tasks:
                    time.sleep(poll_interval)
        finally:
            try:
                client.deactivate(0, 0, 0.0, 0.0)
            except Exception:  # noqa: BLE001, S110 - the server may be gone; it times the manager out
                pass
        outcome.seconds = time.monotonic() - start
        return outcome

    def _statuses(self, record_ids: list[int]) -> dict[int, str]:
        records = self.reader.get_records(record_ids)
        return {r.id: record_status(r) for r in records}

    def _refresh(self, by_record: dict[int, ReplayDrive]) -> None:
        """Map every optimisation record of the drives to its drive."""
        for record in self.reader.get_torsiondrives(list(by_record), include=["optimizations"]):
            for optimization in record.optimizations_ or []:
                self._drive_of[optimization.optimization_id] = by_record[record.id]

    def _answer(self, client, tasks, by_record: dict[int, ReplayDrive], outcome: ReplayOutcome) -> None:
        from qcfractalcompute.compress import compress_result

        if any(t.record_id not in self._drive_of for t in tasks):
            self._refresh(by_record)
        results: dict[int, bytes] = {}
        for task in tasks:
            drive = self._drive_of.get(task.record_id)
            try:
                if drive is None:
                    raise CacheError(f"optimisation {task.record_id} belongs to no imported drive")
                result = self.result_for(drive, task.function_kwargs["input_data"])
                drive.answered += 1
                outcome.answered += 1
            except CacheError as exc:
                result = _failed(str(exc))
                outcome.failed += 1
                self.on_note(f"optimisation {task.record_id}: {exc}")
            results[task.id] = compress_result(result)
        meta = client.return_finished(results)
        outcome.rejected += len(meta.rejected_info)
        for task_id, reason in meta.rejected_info:
            self.on_note(f"the server rejected the replayed task {task_id}: {reason}")

    def result_for(self, drive: ReplayDrive, task_input: dict[str, Any]) -> dict[str, Any]:
        """A successful ``OptimizationResult`` (as a dict) for one task of ``drive``."""
        from qcportal.qcschema_v1 import AtomicResult, OptimizationResult, Provenance

        angle, indices = _constraint(task_input)
        if tuple(indices) not in (drive.identity.dihedral, drive.identity.dihedral[::-1]):
            raise CacheError(
                f"task constrains dihedral {indices}, the drive drives {drive.identity.dihedral}"
            )
        molecule = dict(task_input["initial_molecule"])
        initial = np.asarray(molecule["geometry"], dtype=float).reshape(-1, 3)
        chosen = drive.choose(angle, initial)
        source = drive.archived
        if chosen is None:
            raise CacheError(f"{source.label} has no optimisation at {angle} degrees")
        optimization, matched = chosen
        final = {
            **molecule,
            "geometry": reorder(optimization.final_geometry_bohr, drive.order).ravel().tolist(),
        }
        note = {
            "replayed_from": source.source,
            "source_torsiondrive_id": source.source_record_id,
            "source_optimization_id": optimization.source_record_id,
            "matched": matched,
        }
        provenance = Provenance(
            creator="bespoke-fractal",
            version=package_version(),
            routine="bespoke_fractal.cache.replay",
            **note,
            source_provenance=optimization.provenance,
        )
        trajectory = []
        if optimization.final_gradient is not None:
            trajectory.append(
                AtomicResult(
                    molecule=final,
                    driver="gradient",
                    model=task_input["input_specification"]["model"],
                    keywords=task_input["input_specification"].get("keywords", {}),
                    return_result=reorder(optimization.final_gradient, drive.order).tolist(),
                    properties={"return_energy": optimization.energies[-1], "calcinfo_natom": len(initial)},
                    provenance=Provenance(
                        creator="bespoke-fractal",
                        version=package_version(),
                        routine="bespoke_fractal.cache.replay",
                        **note,
                        source_provenance=optimization.gradient_provenance or {},
                    ),
                    success=True,
                )
            )
        fields = {
            k: task_input[k]
            for k in ("id", "input_specification", "keywords", "protocols")
            if k in task_input
        }
        result = OptimizationResult(
            **fields,
            extras=dict(task_input.get("extras") or {}),
            initial_molecule=molecule,
            final_molecule=final,
            energies=list(optimization.energies),
            trajectory=trajectory,
            provenance=provenance,
            stdout=(
                f"Replayed by bespoke-fractal, not computed: {source.label}, optimisation "
                f"{optimization.source_record_id} at {angle} degrees ({matched}).\n"
            ),
            success=True,
        )
        return result.model_dump()


def _constraint(task_input: dict[str, Any]) -> tuple[int, list[int]]:
    """The grid angle and atoms of the task's dihedral constraint."""
    constraints = (task_input.get("keywords") or {}).get("constraints") or {}
    dihedrals = [c for c in constraints.get("set", []) if c.get("type") == "dihedral"]
    if len(dihedrals) != 1:
        raise CacheError(f"task has {len(dihedrals)} dihedral constraints, expected 1")
    value = float(dihedrals[0]["value"])
    return int(round(value)), [int(i) for i in dihedrals[0]["indices"]]


def _failed(message: str) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"error_type": "replay_error", "error_message": f"bespoke-fractal replay: {message}"},
    }
