"""Fixes to qcengine harnesses, applied inside the QC task processes of this project's managers.

Managers started by ``bespoke-fractal manager start`` (or by the executor) find a ``python3`` on
their PATH that runs ``python -m bespoke_fractal.compat.qcengine SCRIPT ARGS...``: it applies the
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
    """qcengine <= 0.52 converts RDKit's MMFF94/UFF results to atomic units with two slips:
    energies (kcal/mol) with the kJ/mol factor, 4.184x too small, and gradients (kcal/mol/Å)
    with the kJ/mol factor and Å->bohr where bohr->Å is due, 1.17x too small and 3.57x too
    large for the energies they come with. geomeTRIC then steps on a model that overestimates
    every energy change 3.57x (step quality ~0.28) and crawls or stalls on constrained
    optimisations. This patch makes both right. Returns True when it patched."""
    try:
        from qcengine.programs.rdkit import RDKitHarness
        from qcengine.units import ureg

        if getattr(RDKitHarness.compute, "_bespoke_fractal_fixed", False) or not _rdkit_uses_kj():
            return False
    except (ImportError, OSError, TypeError):
        return False
    original = RDKitHarness.compute
    energy_scale = KJ_PER_KCAL
    gradient_scale = KJ_PER_KCAL / ureg.conversion_factor("angstrom", "bohr") ** 2

    def compute(self, input_data, config):
        result = original(self, input_data, config)
        gradient = result.properties.return_gradient
        properties = result.properties.model_copy(
            update={
                "return_energy": result.properties.return_energy * energy_scale,
                "return_gradient": None if gradient is None else gradient * gradient_scale,
            }
        )
        specification = getattr(input_data, "specification", input_data)  # qcschema v2 or v1
        driver = str(getattr(specification.driver, "value", specification.driver))
        scale = gradient_scale if driver == "gradient" else energy_scale
        extras = {**(result.extras or {}), "bespoke_fractal_fix": "rdkit units"}
        return result.model_copy(
            update={"properties": properties, "return_result": result.return_result * scale, "extras": extras}
        )

    compute._bespoke_fractal_fixed = True  # type: ignore[attr-defined]
    RDKitHarness.compute = compute
    return True


OLD_PSI4 = "1.4a2.dev160"  # the first psi4 that qcengine drives through --qcschema


def _old_psi4_compute(self, input_model, config):
    """Run psi4 < 1.4 through its ``--json`` interface, which speaks QCSchema v1 only."""
    import json

    from qcelemental.models import v1
    from qcelemental.util import which
    from qcengine.exceptions import InputError, UnknownError
    from qcengine.util import execute, temporary_directory

    data = json.loads(input_model.convert_v(1).json())
    data.update(
        schema_name="qc_schema_input",
        nthreads=config.ncores,
        memory=int(config.memory * 1024**3 * 0.95),
        return_output=True,
    )
    with temporary_directory(parent=config.scratch_directory, suffix="_psi_scratch") as scratch:
        # "-o stdout": psi4 1.3 otherwise deletes an output file it never wrote, and fails
        command = [which("psi4"), "--scratch", str(scratch), "--json", "data.json", "-o", "stdout"]
        ok, output = execute(
            command, {"data.json": json.dumps(data)}, ["data.json"], scratch_directory=scratch
        )
    if not ok or not output["outfiles"].get("data.json"):
        raise UnknownError(f"psi4 failed: {output.get('stderr') or output.get('stdout') or 'no output'}")
    result = json.loads(output["outfiles"]["data.json"])
    if not result.get("success"):
        error = result.get("error") or {}
        message = error.get("error_message", str(error)) if isinstance(error, dict) else str(error)
        if "ValidationError" in message or "not available" in message or "not recognized" in message:
            raise InputError(message)
        raise UnknownError(message)
    qcvars = result.pop("psi4:qcvars", None)
    if qcvars:
        result.setdefault("extras", {})["qcvars"] = qcvars
    result["schema_name"] = "qcschema_output"
    result["stdout"] = result.pop("raw_output", None)
    for key in ("memory", "nthreads", "return_output", "success"):
        result.pop(key, None)
    result["provenance"] = {
        **result["provenance"],
        "memory": round(config.memory, 3),
        "nthreads": config.ncores,
    }
    result["extras"] = {**result.get("extras", {}), "bespoke_fractal_fix": "psi4 < 1.4 through --json"}
    return v1.AtomicResult(**result, success=True).convert_v(2)


def fix_old_psi4() -> bool:
    """qcengine 0.52 drives psi4 < 1.4 through ``psi4 --json`` but hands it a QCSchema v2 input,
    which psi4 1.3 (Debian's) rejects ("Schema name of 'qcschema_atomic_input' not understood").
    This patch converts to v1 and back when the psi4 found is one of those versions; a newer
    psi4 runs through qcengine's own code. Returns True when it patched."""
    try:
        from qcelemental.util import parse_version
        from qcengine.programs.psi4 import Psi4Harness
    except ImportError:
        return False
    if getattr(Psi4Harness.compute, "_bespoke_fractal_fixed", False):
        return False
    original = Psi4Harness.compute

    def compute(self, input_model, config):
        # the version is asked only when psi4 runs (qcengine caches it), never at start-up
        self.found(raise_error=True)
        if parse_version(self.get_version()) >= parse_version(OLD_PSI4):
            return original(self, input_model, config)
        return _old_psi4_compute(self, input_model, config)

    compute._bespoke_fractal_fixed = True  # type: ignore[attr-defined]
    Psi4Harness.compute = compute
    return True


FIXES = (fix_rdkit_units, fix_old_psi4)


def apply() -> list[str]:
    """Apply every fix whose bug is present; the names of those applied."""
    return [fix.__name__ for fix in FIXES if fix()]


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
