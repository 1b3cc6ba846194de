#!/usr/bin/env python
"""Benchmark of the QC presets: seconds per gradient on a small drug-like fragment, and what a
15° torsion drive at that level costs.

Runs each preset's gradient through qcengine in this process, with the fixes the project's
managers apply (bespoke_fractal/compat/), so the numbers are what a manager worker spends per
task. Presets whose program is not installed are listed as such.

    .venv/bin/python scripts/bench_qc_programs.py [--smiles S] [--cores 2] [--preset NAME]...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

# measured on this project's drives (paracetamol, GFN2-xTB, 30°, 1 conformer): 25 constrained
# optimisations for 12 grid points and 14 gradients per optimisation
OPTIMISATIONS_PER_GRID_POINT = 25 / 12
GRADIENTS_PER_OPTIMISATION = 352 / 25
REPEATS = 3  # timed gradients per preset, after one untimed
# what one optimisation costs beyond its gradients, in a manager's warm task server: geomeTRIC's
# internal coordinates and steps, qcengine and the fork (butane MMFF94: 0.6 s for 14 gradients)
SECONDS_PER_OPTIMISATION = 0.55


def task_path() -> str:
    """PATH as the managers' tasks see it: a classic ``dftd3`` first (psi4 1.3's -D3)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="bf-bench-bin-"))
    shim = bin_dir / "dftd3"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m bespoke_fractal.compat.dftd3 "$@"\n')
    shim.chmod(0o755)
    return os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])


def gradient_seconds(spec, molecule, cores: int) -> tuple[float | None, str]:
    import qcengine

    task = {
        "molecule": molecule,
        "driver": "gradient",
        "model": {"method": spec.method, "basis": spec.basis},
        "keywords": spec.keywords,
    }
    config = {"ncores": cores, "memory": 4}
    # a first call pays qcengine's one-off costs (node description, imports): not timed
    result = qcengine.compute(task, spec.program, raise_error=False, task_config=config)
    if not result.success:
        return None, result.error.error_message.strip().splitlines()[-1][:80]
    start = time.perf_counter()
    for _ in range(REPEATS):
        qcengine.compute(task, spec.program, raise_error=False, task_config=config)
    seconds = (time.perf_counter() - start) / REPEATS
    return seconds, f"{result.provenance.creator} {result.provenance.version}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smiles", default="CC(=O)Nc1ccccc1", help="default: acetanilide (19 atoms)")
    parser.add_argument("--cores", type=int, default=2, help="cores per gradient (qcengine ncores)")
    parser.add_argument("--workers", type=int, default=2, help="parallel workers assumed for the drive")
    parser.add_argument("--preset", action="append", help="presets to run (default: all)")
    args = parser.parse_args()

    os.environ["PATH"] = task_path()
    os.environ["OMP_NUM_THREADS"] = str(args.cores)
    from openff.toolkit import Molecule

    from bespoke_fractal.compat.qcengine import apply
    from bespoke_fractal.qc import get_preset, list_presets
    from bespoke_fractal.qc.torsiondrive import to_qcportal_molecule

    apply()
    molecule = Molecule.from_smiles(args.smiles)
    molecule.generate_conformers(n_conformers=1)
    qc_molecule = to_qcportal_molecule(molecule, molecule.conformers[0].m_as("angstrom")).model_dump()

    specs = [get_preset(name) for name in args.preset] if args.preset else list_presets()
    optimisations = 24 * OPTIMISATIONS_PER_GRID_POINT
    gradients = optimisations * GRADIENTS_PER_OPTIMISATION
    overhead = optimisations * SECONDS_PER_OPTIMISATION
    table = Table(
        "preset",
        "program",
        "method / basis",
        "s per gradient",
        f"15° drive: CPU h ({optimisations:.0f} optimisations, {gradients:.0f} gradients)",
        f"15° drive: wall with {args.workers} workers",
        title=f"QC presets on {args.smiles} ({molecule.n_atoms} atoms, {args.cores} cores per gradient)",
    )
    for spec in specs:
        if spec.program == "psi4" and shutil.which("psi4") is None:
            table.add_row(spec.name, spec.program, f"{spec.method} / {spec.basis}", "not installed", "-", "-")
            continue
        seconds, note = gradient_seconds(spec, qc_molecule, args.cores)
        if seconds is None:
            table.add_row(
                spec.name, spec.program, f"{spec.method} / {spec.basis}", f"failed: {note}", "-", "-"
            )
            continue
        cpu_hours = (gradients * seconds + overhead) * args.cores / 3600
        wall = (gradients * seconds + overhead) / args.workers
        table.add_row(
            spec.name,
            note,
            f"{spec.method} / {spec.basis or '-'}",
            f"{seconds:.3f}",
            f"{cpu_hours:.2f}",
            f"{wall / 3600:.2f} h" if wall > 3600 else f"{wall / 60:.1f} min",
        )
    Console().print(table)
    Console().print(
        f"drive = {optimisations:.0f} optimisations x ({GRADIENTS_PER_OPTIMISATION:.1f} gradients"
        f" + {SECONDS_PER_OPTIMISATION} s of geomeTRIC and task overhead each)"
    )


if __name__ == "__main__":
    main()
