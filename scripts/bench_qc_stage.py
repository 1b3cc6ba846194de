#!/usr/bin/env python
"""Benchmark of the QC stage: the demo torsion drive on a fresh embedded server.

Prints a table: set-up times, the drive's wall time, the QC compute time QCFractal recorded for
its optimisations, the overhead ratio, and the wall time of a cached re-run.

    .venv/bin/python scripts/bench_qc_stage.py [--preset xtb-gfn2] [--grid-spacing 30] [--n-workers 2]
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

from bespoke_fractal.manager import ManagerSettings
from bespoke_fractal.qc import get_preset
from bespoke_fractal.qc.demo import run_demo
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.session import embedded_managers


def recorded_compute_seconds(client, record_id: int) -> tuple[float, int, int]:
    """Sum of the wall times that the managers reported for every optimisation of a drive."""
    drive = client.get_torsiondrives(record_id)
    ids = sorted({o.id for opts in drive.optimizations.values() for o in opts})
    total, gradients = 0.0, 0
    for opt in client.get_optimizations(ids, include=["compute_history"]):
        history = opt.compute_history[-1]
        total += float(getattr(history.provenance, "wall_time", 0.0) or 0.0)
        gradients += len(opt.energies or [])
    return total, len(ids), gradients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="xtb-gfn2")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--n-workers", type=int, default=2)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bf-bench-", dir="/tmp"))
    os.chmod(root, 0o755)
    server = EmbeddedServer(root / "executor")
    rows: list[tuple[str, str]] = []
    try:
        t0 = time.monotonic()
        server.start()
        rows.append(("server first start (initdb, schema, users)", f"{time.monotonic() - t0:.1f} s"))
        t0 = time.monotonic()
        managers = embedded_managers(server, ManagerSettings(n_workers=args.n_workers))
        managers.start()
        rows.append(("managers started", f"{time.monotonic() - t0:.1f} s"))
        spec = get_preset(args.preset, grid_spacing=args.grid_spacing)
        connection = server.connection("submit")

        t0 = time.monotonic()
        result = run_demo(connection, spec, progress=False)
        wall = time.monotonic() - t0
        if not result.ok:
            raise SystemExit(f"drive failed: {result.error}")
        compute, n_opt, n_grad = recorded_compute_seconds(
            server.connection("admin").client(), result.record_id
        )
        t0 = time.monotonic()
        again = run_demo(connection, spec, progress=False)
        rerun = time.monotonic() - t0
        assert again.record_id == result.record_id

        rows += [
            ("drive", f"paracetamol aryl-N, {spec.label}, grid {spec.grid_spacing}"),
            ("grid points / optimisations / gradients", f"{len(result.grid)} / {n_opt} / {n_grad}"),
            ("drive wall time", f"{wall:.1f} s"),
            ("QC compute time recorded by QCFractal", f"{compute:.1f} s"),
            ("compute per worker (recorded / n_workers)", f"{compute / args.n_workers:.1f} s"),
            ("overhead ratio (wall / compute)", f"{wall / compute:.2f}"),
            (
                "overhead ratio per worker (wall / (compute / n_workers))",
                f"{wall / (compute / args.n_workers):.2f}",
            ),
            ("cached re-run wall time", f"{rerun:.2f} s"),
        ]
        managers.stop()
    finally:
        embedded_managers(server).stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    table = Table("measure", "value", title=f"QC stage benchmark ({args.n_workers} workers)")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


if __name__ == "__main__":
    main()
