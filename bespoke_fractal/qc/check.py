"""One tiny calculation per QC preset through the server's compute managers: does it run, and how."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel

from bespoke_fractal.errors import first_line
from bespoke_fractal.qc.availability import ManagerPrograms, active_managers, missing_program
from bespoke_fractal.qc.torsiondrive import to_qcportal_molecule
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.server.records import FINISHED, record_status

if TYPE_CHECKING:
    from qcportal import PortalClient

# water at a fixed geometry (Å): every program and basis handles it in seconds
WATER_SMILES = "[H:2][O:1][H:3]"
WATER_ANGSTROM = [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]


class CheckResult(BaseModel):
    """How one preset's calculation went on the managers."""

    preset: str
    program: str
    version: str | None = None
    method: str
    basis: str | None = None
    seconds: float | None = None
    energy_hartree: float | None = None
    record_id: int | None = None
    manager: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_molecule():
    """The check's water as a qcportal molecule (with connectivity, as rdkit needs)."""
    molecule = Molecule.from_mapped_smiles(WATER_SMILES)
    return to_qcportal_molecule(molecule, np.array(WATER_ANGSTROM))


def check_spec(
    client: PortalClient,
    spec: QCSpec,
    timeout: float = 900.0,
    managers: list[ManagerPrograms] | None = None,
    molecule=None,
) -> CheckResult:
    """Run one gradient of ``spec`` on ``molecule`` (default: water) through the managers.

    Always a new calculation (no cached record is reused). Fails at once with the reason when
    no connected manager has the program.
    """
    result = CheckResult(preset=spec.name, program=spec.program, method=spec.method, basis=spec.basis)
    managers = active_managers(client) if managers is None else managers
    blocked = missing_program(managers, spec.program, optimizer=None)
    if blocked:
        return result.model_copy(update={"error": blocked.replace("waiting for", "no")})
    _meta, [record_id] = client.add_singlepoints(
        [molecule or check_molecule()],
        program=spec.program,
        driver="gradient",
        method=spec.method,
        basis=spec.basis,
        keywords=spec.keywords,
        find_existing=False,
    )
    result.record_id = record_id
    deadline = time.monotonic() + timeout
    while True:
        record = client.get_singlepoints(record_id)
        status = record_status(record)
        if status in FINISHED:
            break
        if time.monotonic() > deadline:
            client.cancel_records([record_id])
            return result.model_copy(
                update={"error": f"not finished after {timeout:.0f} s (status {status})"}
            )
        time.sleep(1.0)
    history = record.compute_history[-1] if record.compute_history else None
    provenance = history.provenance if history is not None else None
    result.manager = record.manager_name
    if provenance is not None:
        result.version = provenance.version
        result.seconds = float(provenance.wall_time) if provenance.wall_time is not None else None
    if status != "complete":
        error = record.error or {}
        lines = [line for line in str(error.get("error_message", status)).splitlines() if line.strip()]
        result.error = f"{error.get('error_type', status)}: {lines[-1] if lines else status}"[:300]
        return result
    try:
        result.energy_hartree = float(record.properties["return_energy"])
    except (KeyError, TypeError, ValueError) as exc:
        result.error = f"no energy in the result: {first_line(exc)}"
    return result
