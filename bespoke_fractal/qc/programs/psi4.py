"""psi4 through qcengine's ``psi4`` harness, including Debian's psi4 1.3.

psi4 1.4 and newer need nothing of this project. For psi4 < 1.4 the managers' task processes
drive ``psi4 --json`` with QCSchema v1 (:func:`fix_old_psi4`), and their PATH gets a ``dftd3``
with the classic DFT-D3 command line (:mod:`bespoke_fractal.compat.dftd3`, on s-dftd3) for
psi4 1.3's -D3 corrections.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

from bespoke_fractal.qc.programs.base import QCProgram, RecordedCost, register_program, wrap_method

OLD_PSI4 = "1.4a2.dev160"  # the first psi4 that qcengine drives through --qcschema


def _old_psi4_compute(self: Any, input_model: Any, config: Any) -> Any:
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

    def fixed(original: Any) -> Any:
        def compute(self: Any, input_model: Any, config: Any) -> Any:
            # the version is asked only when psi4 runs (qcengine caches it), never at start-up
            self.found(raise_error=True)
            if parse_version(self.get_version()) >= parse_version(OLD_PSI4):
                return original(self, input_model, config)
            return _old_psi4_compute(self, input_model, config)

        return compute

    return wrap_method(Psi4Harness, "compute", fixed)


class Psi4(QCProgram):
    """psi4; its energies are Hartree as reported."""

    name = "psi4"
    task_fixes = (fix_old_psi4,)
    costs = {
        "b3lyp-d3bj/dzvp": RecordedCost(
            core_seconds_per_gradient=104,
            gradients_per_grid_point=29,
            note="psi4 1.3.2, 52 s per gradient of a 19-atom fragment on 2 cores",
        ),
    }

    def task_commands(self, python: str) -> dict[str, str | None]:
        """``dftd3`` on s-dftd3 (the ``dftd3`` package) unless a real ``dftd3`` is installed."""
        real_dftd3 = shutil.which("dftd3", path=os.environ.get("PATH", ""))
        if real_dftd3 is None and importlib.util.find_spec("dftd3") is not None:
            return {"dftd3": f'exec "{python}" -m bespoke_fractal.compat.dftd3 "$@"\n'}
        return {"dftd3": None}


register_program(Psi4())
