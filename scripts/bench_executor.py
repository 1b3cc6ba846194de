#!/usr/bin/env python
"""Benchmark of the bespoke executor: one drug-like molecule, fragmentation to force field.

Starts an executor with a fresh embedded server, fits one molecule, then submits it again.
Prints a table: wall time per stage, the QC compute time QCFractal recorded, the coordinator's
overhead (job wall time not spent in a worker, a QC task or waiting for a busy manager) as a
share of the wall time, and the wall time and new QC records of the cached second submission.

    .venv/bin/python scripts/bench_executor.py [--smiles S] [--workflow xtb] [--grid-spacing 30]
                                               [--n-qc-workers 2] [--keep DIR]
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

from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig, wait_until_complete
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.workflow import BespokeWorkflowFactory


def qc_task_times(client, record_ids: list[int]) -> tuple[float, int, float, float]:
    """Recorded compute seconds of every optimisation of the drives, their count, and the
    first start and last end of those tasks (epoch seconds)."""
    total, count, first, last = 0.0, 0, float("inf"), 0.0
    for drive in client.get_torsiondrives(record_ids):
        ids = sorted({o.id for opts in drive.optimizations.values() for o in opts})
        for opt in client.get_optimizations(ids, include=["compute_history"]):
            history = opt.compute_history[-1]
            seconds = float(getattr(history.provenance, "wall_time", 0.0) or 0.0)
            end = history.modified_on.timestamp()
            total += seconds
            count += 1
            first, last = min(first, end - seconds), max(last, end)
    return total, count, first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smiles", default="CC(=O)Nc1ccc(O)cc1", help="default: paracetamol")
    parser.add_argument("--workflow", default="xtb")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--n-qc-workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="use (and keep) this executor directory")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="bf-bench-", dir="/tmp"))
    os.chmod(root, 0o755)
    directory = root / "executor"
    factory = BespokeWorkflowFactory.from_preset(args.workflow, **{"qc_spec.grid_spacing": args.grid_spacing})
    executor = BespokeExecutor(
        n_qc_compute_workers=args.n_qc_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=1),
        directory=directory,
        poll_interval=1.0,
    )
    rows: list[tuple[str, str]] = []
    try:
        start = time.monotonic()
        with executor:
            rows.append(
                ("executor start (server, managers, coordinator)", f"{time.monotonic() - start:.1f} s")
            )
            t0 = time.monotonic()
            first = wait_until_complete(executor.submit(args.smiles, factory), frequency=1.0)
            wall = time.monotonic() - t0
            if first.status != "success":
                raise SystemExit(f"job failed: {first.error}")
            admin = EmbeddedServer(directory).connection("admin").client()
            records_before = sum(1 for _ in admin.query_records())
            t0 = time.monotonic()
            second = wait_until_complete(executor.submit(args.smiles, factory), frequency=0.25)
            cached = time.monotonic() - t0
            new_records = sum(1 for _ in admin.query_records()) - records_before
            compute, n_tasks, task_start, task_end = qc_task_times(admin, first.qc.record_ids)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    stages = {stage.type: stage for stage in first.stages}
    fragmentation = stages["fragmentation"].seconds or 0.0
    qc = stages["qc-generation"].seconds or 0.0
    fit = stages["optimization"].seconds or 0.0
    qc_busy = task_end - task_start  # first QC task start to last QC task end, on the managers
    overhead = wall - fragmentation - qc_busy - fit
    rows += [
        ("molecule", f"{args.smiles} ({first.qc.total} drives, {args.workflow}, {args.grid_spacing}°)"),
        ("fragmentation stage", f"{fragmentation:.1f} s"),
        ("QC stage (submit to last drive complete)", f"{qc:.1f} s"),
        ("optimisation stage (ForceBalance + scoring)", f"{fit:.1f} s"),
        ("job wall time", f"{wall:.1f} s"),
        ("QC tasks / compute time recorded by QCFractal", f"{n_tasks} / {compute:.1f} s"),
        (f"QC compute per worker ({args.n_qc_workers} workers)", f"{compute / args.n_qc_workers:.1f} s"),
        ("QC span on the managers (first task start to last end)", f"{qc_busy:.1f} s"),
        (
            "coordinator overhead (wall - stages' own work)",
            f"{overhead:.1f} s ({100 * overhead / wall:.1f} %)",
        ),
        (
            "mean RMSE before -> after (kcal/mol)",
            f"{first.results.mean_rmse_before:.2f} -> {first.results.mean_rmse_after:.2f}",
        ),
        ("second submission: wall time", f"{cached:.2f} s (target < 10 s)"),
        ("second submission: new QC records", f"{new_records} (status {second.status})"),
    ]
    table = Table("measure", "value", title="bespoke executor benchmark")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


if __name__ == "__main__":
    main()
