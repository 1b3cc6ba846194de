#!/usr/bin/env python
"""Scaling benchmark: wall time against the number of molecules and of QC workers.

For each (molecules, workers) pair a fresh embedded server is started and the first N small
molecules of bespoke_fractal.benchmark_molecules are fitted at once. Prints wall time, QC
compute recorded by QCFractal, and how busy the QC workers were (compute / (QC stage span x
workers)): near 1.0 means the executor kept every worker fed.

    .venv/bin/python scripts/bench_scaling.py [--molecules 1 5 20] [--workers 1 2]
                                              [--workflow debug] [--grid-spacing 90]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench_executor import qc_task_times
from bench_load import wait_all
from rich.console import Console
from rich.table import Table

from bespoke_fractal.benchmark_molecules import SMALL_MOLECULES
from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig, JobStore
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.workflow import BespokeWorkflowFactory


def run(n_molecules: int, n_workers: int, factory: BespokeWorkflowFactory) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bf-scale-", dir="/tmp"))
    os.chmod(root, 0o755)
    directory = root / "executor"
    executor = BespokeExecutor(
        n_qc_compute_workers=n_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=1),
        directory=directory,
        poll_interval=1.0,
    )
    try:
        with executor:
            store = JobStore.in_directory(directory)
            start = time.monotonic()
            ids = [executor.submit(smiles, factory) for smiles in SMALL_MOLECULES[:n_molecules]]
            outputs = wait_all(store, ids)
            wall = time.monotonic() - start
            admin = EmbeddedServer(directory).connection("admin").client()
            record_ids = sorted({r for o in outputs for r in o.qc.record_ids})
            compute, tasks, first, last = (
                qc_task_times(admin, record_ids) if record_ids else (0.0, 0, 0.0, 0.0)
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    span = max(last - first, 1e-9)
    return {
        "wall": wall,
        "drives": len(record_ids),
        "tasks": tasks,
        "compute": compute,
        "span": span,
        "busy": compute / (span * n_workers),
        "ok": sum(o.status == "success" for o in outputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workflow", default="debug")
    parser.add_argument("--grid-spacing", type=int, default=90)
    args = parser.parse_args()
    factory = BespokeWorkflowFactory.from_preset(args.workflow, **{"qc_spec.grid_spacing": args.grid_spacing})
    table = Table(
        "molecules",
        "QC workers",
        "jobs ok",
        "drives",
        "QC tasks",
        "wall s",
        "wall s per molecule",
        "QC compute s",
        "QC span s",
        "QC workers busy",
        title=f"scaling: {args.workflow}, {args.grid_spacing}°",
    )
    for n_molecules in args.molecules:
        for n_workers in args.workers:
            r = run(n_molecules, n_workers, factory)
            table.add_row(
                str(n_molecules),
                str(n_workers),
                f"{r['ok']}/{n_molecules}",
                str(r["drives"]),
                str(r["tasks"]),
                f"{r['wall']:.0f}",
                f"{r['wall'] / n_molecules:.1f}",
                f"{r['compute']:.0f}",
                f"{r['span']:.0f}",
                f"{r['busy']:.2f}",
            )
            Console().print(f"done: {n_molecules} molecules, {n_workers} workers, wall {r['wall']:.0f} s")
    Console().print(table)


if __name__ == "__main__":
    main()
