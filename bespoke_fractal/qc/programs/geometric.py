"""geomeTRIC, the optimisation procedure of every torsion drive's constrained optimisations."""

from __future__ import annotations

from bespoke_fractal.qc.programs.base import QCProgram, register_program


class GeomeTRIC(QCProgram):
    """geomeTRIC through qcengine's ``geometric`` procedure; imported once by warm task servers."""

    name = "geometric"
    preload = ("qcengine.procedures.geometric", "geometric", "geometric.optimize")


register_program(GeomeTRIC())
