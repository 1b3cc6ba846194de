"""Fixes to qcengine harnesses, applied inside the QC task processes of this project's managers.

Managers started by ``bespoke-fractal manager start`` (or by the executor) find a ``python3`` on
their PATH that runs ``python -m bespoke_fractal.qcengine_fixes SCRIPT ARGS...``: it applies the
fixes below, then runs qcfractalcompute's task script as ``__main__``. Each fix checks that the
bug is present, so it switches itself off once qcengine is fixed; plain
``qcfractal-compute-manager`` processes are not touched (results are checked when read, see
:mod:`bespoke_fractal.qc.programs`).

This module imports nothing of this project: every QC task starts a fresh Python.
"""

from __future__ import annotations

import inspect
import runpy
import sys

KJ_PER_KCAL = 4.184


def _rdkit_uses_kj() -> bool:
    from qcengine.programs.rdkit import RDKitHarness

    return '"kJ / mol"' in inspect.getsource(RDKitHarness.compute)


def fix_rdkit_units() -> bool:
    """qcengine <= 0.52 converts RDKit's kcal/mol energies (and kcal/mol/Å gradients) to Hartree
    with the kJ/mol factor, so every energy and gradient is 4.184x too small. Besides wrong
    profiles, geomeTRIC then optimises on a surface 4.184x flatter than its model Hessian
    assumes and can stall for minutes on a constrained step. Returns True when it patched."""
    try:
        from qcengine.programs.rdkit import RDKitHarness

        if getattr(RDKitHarness.compute, "_bespoke_fractal_fixed", False) or not _rdkit_uses_kj():
            return False
    except (ImportError, OSError, TypeError):
        return False
    original = RDKitHarness.compute

    def compute(self, input_data, config):
        result = original(self, input_data, config)
        properties = result.properties.model_copy(
            update={
                "return_energy": result.properties.return_energy * KJ_PER_KCAL,
                "return_gradient": None
                if result.properties.return_gradient is None
                else result.properties.return_gradient * KJ_PER_KCAL,
            }
        )
        extras = {**(result.extras or {}), "bespoke_fractal_fix": "rdkit kcal/mol -> hartree"}
        return result.model_copy(
            update={
                "properties": properties,
                "return_result": result.return_result * KJ_PER_KCAL,
                "extras": extras,
            }
        )

    compute._bespoke_fractal_fixed = True  # type: ignore[attr-defined]
    RDKitHarness.compute = compute
    return True


FIXES = (fix_rdkit_units,)


def apply() -> list[str]:
    """Apply every fix whose bug is present; the names of those applied."""
    return [fix.__name__ for fix in FIXES if fix()]


def main() -> None:
    """``python -m bespoke_fractal.qcengine_fixes SCRIPT ARGS...``: fix, then run SCRIPT."""
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m bespoke_fractal.qcengine_fixes SCRIPT [ARGS...]")
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    apply()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
