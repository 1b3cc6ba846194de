#!/usr/bin/env python
"""End-to-end benchmark: three drug-like molecules through one executor (fresh embedded server).

Prints one row per molecule and a summary: stage wall times, QC compute time recorded by
QCFractal, the coordinator's overhead against the ideal wall time (QC compute / cores, target
wall <= 1.05x that), the cached re-run (target <= 10 s, zero new QC tasks), and the peak memory
of the coordinator.

    .venv/bin/python scripts/bench_end_to_end.py [--workflow xtb] [--grid-spacing 30] [--n-qc-workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import time

from bench_executor import qc_task_times
from bench_load import PeakMemory, scratch_executor, wait_all
from rich.console import Console
from rich.table import Table

from bespoke_fractal.executor import JobStore
from bespoke_fractal.server import EmbeddedServer

MOLECULES = {
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "(R)-mexiletine": "Cc1cccc(C)c1OC[C@@H](C)N",
}


def _ok(outputs) -> int:
    return sum(o.status == "success" for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", default="xtb")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--n-qc-workers", type=int, default=2)
    args = parser.parse_args()

    root, directory, factory, executor = scratch_executor(
        "bf-e2e-", args.workflow, args.grid_spacing, args.n_qc_workers
    )
    smiles = MOLECULES
    try:
        with executor:
            memory = PeakMemory(executor.coordinator_pid)
            memory.start()
            store = JobStore.in_directory(directory)
            start = time.monotonic()
            ids = [executor.submit(s, factory, name=name) for name, s in smiles.items()]
            outputs = wait_all(store, ids)
            wall = time.monotonic() - start
            admin = EmbeddedServer(directory).connection("admin").client()
            tasks_before = sum(1 for _ in admin.query_records())
            start = time.monotonic()
            again = wait_all(store, [executor.submit(s, factory, name=name) for name, s in smiles.items()])
            cached = time.monotonic() - start
            new_records = sum(1 for _ in admin.query_records()) - tasks_before
            memory.stop.set()
            times = {
                o.id: qc_task_times(admin, o.qc.record_ids) if o.qc.record_ids else None for o in outputs
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    table = Table(
        "molecule",
        "drives",
        "fragmentation s",
        "QC stage s",
        "fit s",
        "QC compute s",
        "RMSE before -> after",
        title=f"end to end: {args.workflow}, {args.grid_spacing}°, {args.n_qc_workers} QC workers",
    )
    total_compute = 0.0
    for output in outputs:
        stages = {stage.type: stage for stage in output.stages}
        compute = times[output.id][0] if output.id in times else 0.0
        total_compute += compute
        rmse = (
            f"{output.results.mean_rmse_before:.2f} -> {output.results.mean_rmse_after:.2f}"
            if output.results
            else output.error or output.status
        )
        table.add_row(
            output.name,
            str(output.qc.total),
            f"{stages['fragmentation'].seconds or 0:.0f}",
            f"{stages['qc-generation'].seconds or 0:.0f}",
            f"{stages['optimization'].seconds or 0:.0f}",
            f"{compute:.0f}",
            rmse,
        )
    Console().print(table)
    ideal = total_compute / args.n_qc_workers
    summary = Table("measure", "value", title="summary")
    for name, value in [
        ("wall time, all three (submitted together)", f"{wall:.0f} s"),
        ("QC compute recorded by QCFractal / workers", f"{total_compute:.0f} s / {args.n_qc_workers}"),
        ("wall / (QC compute / workers)", f"{wall / ideal:.2f} (target <= 1.05)"),
        ("cached re-run of all three", f"{cached:.1f} s (target <= 10 s), {new_records} new QC records"),
        ("jobs succeeded (first run / re-run)", f"{_ok(outputs)} / {_ok(again)} of {len(outputs)}"),
        (
            "coordinator peak memory (own / with pools)",
            f"{memory.own / 2**20:.0f} / {memory.tree / 2**20:.0f} MiB",
        ),
    ]:
        summary.add_row(name, value)
    Console().print(summary)


if __name__ == "__main__":
    main()
