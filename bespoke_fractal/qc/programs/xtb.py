"""GFN2-xTB through the ``xtb`` package's qcengine harness; energies are Hartree as reported."""

from __future__ import annotations

from bespoke_fractal.qc.programs.base import QCProgram, RecordedCost, register_program


class XTB(QCProgram):
    """xtb (the xtb 6 library of the ``xtb`` Python package)."""

    name = "xtb"
    preload = ("xtb.qcschema.harness",)
    costs = {
        "gfn2-xtb/none": RecordedCost(
            core_seconds_per_gradient=0.1,
            gradients_per_grid_point=30,
            note="GFN2-xTB 0.018 s per gradient of a 19-atom fragment plus geomeTRIC and task overhead",
        ),
    }


register_program(XTB())
