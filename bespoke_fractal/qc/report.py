"""Tables of torsion profiles for people."""

from __future__ import annotations

from rich.table import Table

from bespoke_fractal.schema.drives import TorsionDriveResult


def profile_table(result: TorsionDriveResult) -> Table:
    a, b, c, d = result.driven_dihedral
    title = (
        f"Torsion {a}-{b}-{c}-{d}  {result.spec.label}  grid {result.spec.grid_spacing}°  "
        f"record {result.record_id}"
    )
    table = Table(title=title)
    table.add_column("angle (deg)", justify="right")
    table.add_column("E (Hartree)", justify="right")
    table.add_column("E rel. (kcal/mol)", justify="right")
    table.add_column("optimisation id", justify="right")
    for point in result.grid:
        table.add_row(
            f"{point.angle:d}",
            f"{point.energy_hartree:.8f}",
            f"{point.relative_energy_kcal_mol:.3f}",
            str(point.optimization_id),
        )
    return table
