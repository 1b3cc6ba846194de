"""QC programs: one module per program, each registering a :class:`QCProgram`.

Every module of this package other than :mod:`~bespoke_fractal.qc.programs.base` is imported
here, so adding a program is adding one module (and, if it has presets, their entries in
``schema/qc_presets.yaml``). The rest of the project asks the registry: energy checks
(:func:`energy_check_for`), task-process fixes (:mod:`bespoke_fractal.compat.qcengine`), warm
server imports (:mod:`bespoke_fractal.manager.warm`), task commands
(:func:`bespoke_fractal.manager.local.write_task_bin`) and recorded costs
(:mod:`bespoke_fractal.qc.plan`).
"""

from __future__ import annotations

import importlib
import pkgutil

from bespoke_fractal.qc.programs.base import (
    EnergyCheck,
    QCProgram,
    RecordedCost,
    TaskFix,
    energy_check_for,
    get_program,
    list_programs,
    register_program,
    wrap_method,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

from bespoke_fractal.qc.programs.rdkit import rdkit_energy_kcal  # noqa: E402 - after registration

__all__ = [
    "EnergyCheck",
    "QCProgram",
    "RecordedCost",
    "TaskFix",
    "energy_check_for",
    "get_program",
    "list_programs",
    "rdkit_energy_kcal",
    "register_program",
    "wrap_method",
]
