#!/usr/bin/env python
"""Load benchmark: many small molecules submitted at once to one executor (fresh embedded server).

Prints a table: jobs finished, target torsions, distinct drives needed and torsiondrive records
created (equal when shared fragments are driven once), wall time, and the peak memory of the
coordinator process and of its worker pools.

    .venv/bin/python scripts/bench_load.py            # 10 molecules
    .venv/bin/python scripts/bench_load.py --full     # 50 molecules
    [--workflow debug] [--grid-spacing 90] [--n-qc-workers 2] [--n-fragmenter-workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bespoke_fractal.benchmark_molecules import SMALL_MOLECULES
from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig, JobStore
from bespoke_fractal.server import EmbeddedServer
from bespoke_fractal.workflow import BespokeWorkflowFactory


class PeakMemory(threading.Thread):
    """Samples the resident memory of a process, and of it with its children, every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.own, self.tree = pid, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            try:
                process = psutil.Process(self.pid)
                own = process.memory_info().rss
                tree = own + sum(c.memory_info().rss for c in process.children(recursive=True))
            except psutil.Error:
                continue
            self.own, self.tree = max(self.own, own), max(self.tree, tree)


def wait_all(store: JobStore, ids: list[str], interval: float = 1.0) -> list:
    """The outputs of jobs `ids`, once every one has succeeded or errored."""
    while True:
        outputs = [store.output(job_id) for job_id in ids]
        if all(o.status in ("success", "errored") for o in outputs):
            return outputs
        time.sleep(interval)


def scratch_executor(
    prefix: str, workflow: str, grid_spacing: int, n_qc_workers: int, **options: Any
) -> tuple[Path, Path, BespokeWorkflowFactory, BespokeExecutor]:
    """A fresh directory under /tmp (``root``, removed by the caller), an executor on
    ``root/executor`` with one-core QC workers, and the workflow preset at ``grid_spacing``."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(root, 0o755)
    directory = root / "executor"
    factory = BespokeWorkflowFactory.from_preset(workflow, **{"qc_spec.grid_spacing": grid_spacing})
    executor = BespokeExecutor(
        n_qc_compute_workers=n_qc_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=1),
        directory=directory,
        poll_interval=1.0,
        **options,
    )
    return root, directory, factory, executor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all 50 molecules")
    parser.add_argument("--n", type=int, default=10, help="molecules without --full")
    parser.add_argument("--workflow", default="debug")
    parser.add_argument("--grid-spacing", type=int, default=90)
    parser.add_argument("--n-qc-workers", type=int, default=2)
    parser.add_argument("--n-fragmenter-workers", type=int, default=1)
    args = parser.parse_args()
    molecules = SMALL_MOLECULES if args.full else SMALL_MOLECULES[: args.n]

    root, directory, factory, executor = scratch_executor(
        "bf-load-",
        args.workflow,
        args.grid_spacing,
        args.n_qc_workers,
        n_fragmenter_workers=args.n_fragmenter_workers,
    )
    try:
        with executor:
            memory = PeakMemory(executor.coordinator_pid)
            memory.start()
            start = time.monotonic()
            ids = [executor.submit(smiles, factory) for smiles in molecules]
            store = JobStore.in_directory(directory)
            outputs = wait_all(store, ids, interval=2.0)
            wall = time.monotonic() - start
            memory.stop.set()
            admin = EmbeddedServer(directory).connection("admin").client()
            records = sum(1 for _ in admin.query_records(record_type="torsiondrive"))
            identities = {
                t.identity.key for i in ids if (schema := store.schema(i)) is not None for t in schema.targets
            }
            targets = sum(len(s.targets) for i in ids if (s := store.schema(i)) is not None)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    errored = [o for o in outputs if o.status != "success"]
    rows = [
        ("molecules submitted at once", f"{len(molecules)} ({args.workflow}, {args.grid_spacing}°)"),
        ("jobs succeeded / errored", f"{len(outputs) - len(errored)} / {len(errored)}"),
        ("target torsions", str(targets)),
        ("distinct drives needed", str(len(identities))),
        ("torsiondrive records created", str(records)),
        ("wall time", f"{wall:.0f} s ({wall / len(molecules):.1f} s per molecule)"),
        ("coordinator peak memory", f"{memory.own / 2**20:.0f} MiB"),
        ("coordinator + worker pools peak", f"{memory.tree / 2**20:.0f} MiB"),
    ]
    table = Table("measure", "value", title="load benchmark")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    for output in errored:
        print(f"Error: {output.error}")


if __name__ == "__main__":
    main()
