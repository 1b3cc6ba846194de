#!/usr/bin/env python
"""Benchmark of the optimisation stage: bespoke torsion fits against GFN2-xTB torsion drives.

Starts an embedded server in a temporary directory (or uses --directory), fragments each molecule,
drives every target torsion with the chosen QC preset, fits with ForceBalance and prints per
torsion: RMSE and max error against QC before and after the fit (fragment and parent), fit
seconds and ForceBalance iterations; then the mean RMSE before and after.

    .venv/bin/python scripts/bench_fit.py [--workflow xtb] [--grid-spacing 30] [--n-conformers 1]
        [--n-workers 2] [--directory DIR] [SMILES ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bespoke_fractal.executor.drives import run_targets
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.manager import ManagerSettings
from bespoke_fractal.optimization.stage import optimize_schema, profiles_from_results
from bespoke_fractal.qc import TorsionDriveStage
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.session import embedded_managers
from bespoke_fractal.workflow import BespokeWorkflowFactory

MOLECULES = {
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "(S)-ibuprofen": "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("smiles", nargs="*", help="molecules (default: paracetamol and ibuprofen)")
    parser.add_argument("--workflow", default="xtb")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--n-conformers", type=int, default=1)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--directory", type=Path, help="reuse an embedded server directory")
    args = parser.parse_args()
    molecules = {smiles: smiles for smiles in args.smiles} or MOLECULES
    factory = BespokeWorkflowFactory.from_preset(
        args.workflow,
        **{"qc_spec.grid_spacing": args.grid_spacing, "qc_spec.n_conformers": args.n_conformers},
    )

    temporary = args.directory is None
    root = Path(tempfile.mkdtemp(prefix="bf-bench-fit-", dir="/tmp")) if temporary else args.directory
    os.chmod(root, 0o755)
    server = EmbeddedServer(root / "executor" if temporary else root)
    console = Console(width=180)
    table = Table(
        "molecule", "torsion", "QC points", "relaxed RMSE before", "relaxed RMSE after", "max before",
        "max after", "frozen RMSE before", "frozen RMSE after", "kept initial", "fit s", "FB iterations",
        title=f"bespoke fits against {factory.qc_spec.label}, {args.grid_spacing}° grid",
    )  # fmt: skip
    before, after = [], []
    try:
        server.start()
        managers = embedded_managers(server, ManagerSettings(n_workers=args.n_workers))
        managers.start()
        stage = TorsionDriveStage(server.connection("submit").client())
        cache = AM1BondOrderCache(root / "am1-cache")
        for name, smiles in molecules.items():
            start = time.perf_counter()
            schema = factory.optimization_schema_from_molecule(smiles, cache)
            results = run_targets(stage, [schema], timeout=6 * 3600, progress=False)
            qc_seconds = time.perf_counter() - start
            profiles = profiles_from_results(schema, results)
            result = optimize_schema(schema, profiles, root / "fits", timeout=3600)
            console.print(
                f"{name}: {len(schema.targets)} torsions, QC {qc_seconds:.0f} s, "
                f"fit {result.fit_seconds:.0f} s, converged={result.converged} {result.message} "
                f"-> {result.offxml}"
            )
            for t in result.torsions:
                a, b = t.parent_bonds[0]
                before.append(t.relaxed_before.rmse)
                after.append(t.relaxed_after.rmse)
                table.add_row(
                    name,
                    f"{a}-{b}" + (f" (+{len(t.parent_bonds) - 1})" if len(t.parent_bonds) > 1 else ""),
                    str(len(t.angles)),
                    f"{t.relaxed_before.rmse:.2f}",
                    f"{t.relaxed_after.rmse:.2f}",
                    f"{t.relaxed_before.max_error:.2f}",
                    f"{t.relaxed_after.max_error:.2f}",
                    f"{t.frozen_before.rmse:.2f}",
                    f"{t.frozen_after.rmse:.2f}",
                    "yes" if t.kept_initial else "no",
                    f"{result.fit_seconds:.0f}",
                    str(result.iterations),
                )
    finally:
        embedded_managers(server).stop()
        server.stop()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    console.print(table)
    if before:
        mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
        console.print(
            f"mean relaxed-scan RMSE against QC (kcal/mol): before {mean_before:.2f}, after {mean_after:.2f} "
            f"(ratio {mean_after / mean_before:.2f})"
        )


if __name__ == "__main__":
    main()
