"""The QC task process of this project's managers: qcengine fixes, then qcfractalcompute's script.

Managers started by ``bespoke-fractal manager start`` (or by the executor) find a ``python3`` on
their PATH that runs ``python -m bespoke_fractal.compat.qcengine SCRIPT ARGS...``: it applies the
fixes every registered QC program declares (``task_fixes`` of the modules of
:mod:`bespoke_fractal.qc.programs`), then runs qcfractalcompute's task script as ``__main__``.
Each fix checks that its bug is present, so it switches itself off once qcengine is fixed; plain
``qcfractal-compute-manager`` processes are not touched (results are checked when read, see
:mod:`bespoke_fractal.qc.programs`).
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from bespoke_fractal.qc.programs import TaskFix, list_programs


def task_fixes() -> list[TaskFix]:
    """The fixes of every registered QC program, in registry order."""
    return [fix for program in list_programs() for fix in program.task_fixes]


def apply() -> list[str]:
    """Apply every fix whose bug is present; the names of those applied."""
    return [fix.__name__ for fix in task_fixes() if fix()]


def __getattr__(name: str) -> Any:
    """``FIXES`` (every fix) and each fix by its name, as this module used to define them."""
    fixes = task_fixes()
    if name == "FIXES":
        return tuple(fixes)
    for fix in fixes:
        if fix.__name__ == name:
            return fix
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """``python -m bespoke_fractal.compat.qcengine SCRIPT ARGS...``: fix, then run SCRIPT."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bespoke_fractal.compat.qcengine SCRIPT [ARGS...]")
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    apply()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
