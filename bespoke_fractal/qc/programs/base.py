"""The registry of QC programs and the base class each program module fills in.

A :class:`QCProgram` holds all this project knows about one program: how to check the
energies its drives return, the qcengine fixes its task processes need, the modules a warm task
server imports for it, the commands its tasks must find on PATH, and its recorded costs. Every
module of this package defines one and registers it with :func:`register_program`.

Light on purpose (no OpenFF, no QCPortal at import): QC task processes import this package to
apply the fixes (:mod:`bespoke_fractal.compat.qcengine`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np
    from openff.toolkit import Molecule

    from bespoke_fractal.schema.qc import QCSpec

TaskFix = Callable[[], bool]
"""A qcengine fix run in each QC task process: patches when its bug is present, True if it did."""
FIXED_MARK = "_bespoke_fractal_fixed"


def wrap_method(owner: type, name: str, wrap: Callable[[Any], Any]) -> bool:
    """Replace ``owner.name`` by ``wrap(original)`` unless already replaced; True if replaced.
    The mechanics of a :data:`TaskFix`."""
    original = getattr(owner, name)
    if getattr(original, FIXED_MARK, False):
        return False
    replacement = wrap(original)
    setattr(replacement, FIXED_MARK, True)
    setattr(owner, name, replacement)
    return True


class EnergyCheck(BaseModel):
    """Factor applied to the record's energies, and why."""

    scale: float = 1.0
    note: str | None = None


class RecordedCost(BaseModel):
    """Measured cost of one method, used by cost previews when the server has no drive to measure.

    ``core_seconds_per_gradient``: task core-seconds (geomeTRIC step and task overhead included)
    divided by gradients; ``gradients_per_grid_point``: all optimisation gradients of a drive
    divided by its grid points (torsiondrive revisits points from both directions).
    """

    model_config = ConfigDict(extra="forbid")

    core_seconds_per_gradient: float = Field(gt=0)
    gradients_per_grid_point: float = Field(gt=0)
    note: str = ""


class QCProgram:
    """One program (or procedure) run by the managers' QC tasks. Defaults: nothing to do."""

    name: ClassVar[str] = ""
    """The program's name in QCSpec.program and in qcengine."""
    task_fixes: ClassVar[tuple[TaskFix, ...]] = ()
    """qcengine fixes applied in every QC task process of this project's managers."""
    preload: ClassVar[tuple[str, ...]] = ()
    """Modules a warm task server imports once (skipped when not installed)."""
    costs: ClassVar[dict[str, RecordedCost]] = {}
    """Recorded costs by ``method/basis`` (``none`` without basis)."""

    def check_energies(
        self, spec: QCSpec, molecule: Molecule, geometries: Sequence[np.ndarray], energies: Sequence[float]
    ) -> EnergyCheck:
        """Verify a drive's raw energies (Hartree as the record holds them); the factor to apply."""
        return EnergyCheck()

    def task_commands(self, python: str) -> dict[str, str | None]:
        """Commands the managers' QC tasks must find first on PATH: name -> ``sh`` body, or None
        for a command not to provide (removed if an earlier start wrote it)."""
        return {}


_PROGRAMS: dict[str, QCProgram] = {}


def register_program(program: QCProgram) -> QCProgram:
    """Add ``program`` to the registry; a name is registered once."""
    if not program.name:
        raise ValueError(f"{type(program).__name__} has no name")
    if program.name in _PROGRAMS:
        raise ValueError(f"QC program '{program.name}' is registered twice")
    _PROGRAMS[program.name] = program
    return program


def get_program(name: str) -> QCProgram | None:
    """The registered program called ``name``, or None."""
    return _PROGRAMS.get(name)


def list_programs() -> list[QCProgram]:
    """Every registered program, in registration order."""
    return list(_PROGRAMS.values())


def energy_check_for(program: str) -> QCProgram:
    """The program whose :meth:`QCProgram.check_energies` verifies drives of ``program``; a
    program not registered gets the default (energies taken as reported)."""
    return _PROGRAMS.get(program) or QCProgram()
