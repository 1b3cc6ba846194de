"""A ``dftd3`` program with the command line of Grimme's classic DFT-D3, computed by s-dftd3.

psi4 1.3 (Debian's psi4) adds -D3 corrections by running ``dftd3 dftd3_geometry.xyz [-grad]``
in a directory holding ``.dftd3par.local`` ("s6 a1|rs6 s8 a2|rs8 alpha6 version") and reading
``Edisp /kcal,au:`` from stdout and the gradient from the file ``dftd3_gradient``. The classic
program is not on PyPI; the ``dftd3`` package (s-dftd3, the reference reimplementation from the
same group) is. This module speaks the classic interface on top of it: two-body terms only, as
the classic program computes without ``-abc``.

    python -m bespoke_fractal.compat.dftd3 GEOMETRY.xyz [-grad]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

BOHR_PER_ANGSTROM = 1.0 / 0.52917721067
HARTREE_IN_KCAL_MOL = 627.509474
# classic "version" numbers of .dftd3par: damping -> (s-dftd3 class, parameter names in file order)
DAMPING = {
    3: ("ZeroDampingParam", ("s6", "rs6", "s8", "rs8", "alp")),
    4: ("RationalDampingParam", ("s6", "a1", "s8", "a2", None)),
    6: ("ModifiedRationalDampingParam", ("s6", "a1", "s8", "a2", None)),
}
SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br "
    "Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho "
    "Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn"
).split()


def read_xyz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers and positions (bohr) from an XYZ file in Å."""
    lines = path.read_text().splitlines()
    count = int(lines[0].split()[0])
    numbers, positions = [], []
    for line in lines[2 : 2 + count]:
        symbol, x, y, z = line.split()[:4]
        numbers.append(SYMBOLS.index(symbol.capitalize()) + 1)
        positions.append([float(x), float(y), float(z)])
    return np.array(numbers), np.array(positions) * BOHR_PER_ANGSTROM


def read_parameters(path: Path) -> Any:
    """The damping parameters of a classic ``.dftd3par`` file, as an s-dftd3 object."""
    from dftd3 import interface

    values = [float(value) for value in path.read_text().split()]
    version = int(values[5])
    if version not in DAMPING:
        raise SystemExit(f"dftd3: damping version {version} is not supported here (3, 4 and 6 are)")
    class_name, names = DAMPING[version]
    kwargs = {name: value for name, value in zip(names, values[:5], strict=True) if name is not None}
    return getattr(interface, class_name)(s9=0.0, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = [arg for arg in args if not arg.startswith("-")]
    if len(files) != 1:
        print("usage: dftd3 GEOMETRY.xyz [-grad]  (parameters from .dftd3par.local)", file=sys.stderr)
        return 1
    from dftd3 import __version__
    from dftd3.interface import DispersionModel

    numbers, positions = read_xyz(Path(files[0]))
    parameter_file = next((p for p in (Path(".dftd3par.local"),) if p.is_file()), None)
    if parameter_file is None:
        print("dftd3: no .dftd3par.local with damping parameters in this directory", file=sys.stderr)
        return 1
    result = DispersionModel(numbers, positions).get_dispersion(
        read_parameters(parameter_file), grad="-grad" in args
    )
    energy = float(result["energy"])
    print(f" DFTD3 V3.1 Rev 1 (s-dftd3 {__version__} through bespoke-fractal)")
    print(f" Edisp /kcal,au: {energy * HARTREE_IN_KCAL_MOL:18.10f} {energy:18.12f}")
    if "-grad" in args:
        gradient = np.asarray(result["gradient"]).reshape(-1, 3)
        Path("dftd3_gradient").write_text(
            "".join(f"{x:22.14E}{y:22.14E}{z:22.14E}\n" for x, y, z in gradient)
        )
    print(" normal termination of dftd3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
