#!/usr/bin/env python
"""Cost-preview benchmark: the plan's QC estimate against the measured QC time of the drives.

On a fresh embedded server with real compute managers: fragment the molecules, compute every
other distinct drive (the "cached" half), plan the batch (so the cost model is measured on the
cached half), compute the remaining drives, and compare the plan's estimate for them with the
QC time QCFractal recorded for them (optimisation wall seconds x cores per task). The recorded
per-method cost (the costs of bespoke_fractal/qc/programs/) is compared too.

    .venv/bin/python scripts/bench_plan.py [--preset debug] [--grid-spacing 30] [--molecules 6]
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

from bespoke_fractal.benchmark_molecules import SMALL_MOLECULES
from bespoke_fractal.executor import BespokeExecutor
from bespoke_fractal.manager import ManagerSettings
from bespoke_fractal.qc import TorsionDriveStage
from bespoke_fractal.qc.plan import CostModel, optimization_seconds
from bespoke_fractal.server import EmbeddedServer, ServerSettings
from bespoke_fractal.session import embedded_managers
from bespoke_fractal.workflow import BespokeWorkflowFactory


def submit_drives(stage: TorsionDriveStage, schemas, keys: set[str], spec):
    """Submit the drives named by ``keys`` (identity keys) and wait; their record ids."""
    torsions = {}
    for schema in schemas:
        for target in schema.targets:
            if target.identity.key in keys and target.identity.key not in torsions:
                fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
                torsions[target.identity.key] = (fragment, target.fragment_dihedral)
    drives = stage.submit_many(list(torsions.values()), spec)
    results = stage.wait(drives, timeout=3600, progress=False)
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"drives failed: {failed[:3]}")
    return [d.record_id for d in drives]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="debug", help="workflow preset")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--molecules", type=int, default=6, help="first N of the benchmark molecules")
    parser.add_argument("--workers", type=int, default=2, help="QC compute workers (1 core each)")
    args = parser.parse_args()
    factory = BespokeWorkflowFactory.from_preset(args.preset, **{"qc_spec.grid_spacing": args.grid_spacing})
    spec = factory.qc_spec
    molecules = list(SMALL_MOLECULES[2 : 2 + args.molecules])
    root = Path(tempfile.mkdtemp(prefix="bf-plan-", dir="/tmp"))
    os.chmod(root, 0o755)
    server = EmbeddedServer(root / "executor", ServerSettings(heartbeat_frequency=2))
    console = Console(width=150)
    try:
        server.start()
        managers = embedded_managers(server, ManagerSettings(n_workers=args.workers, cores_per_worker=1))
        managers.start()
        stage = TorsionDriveStage(server.connection("submit").client())
        executor = BespokeExecutor(directory=server.directory, n_qc_compute_workers=0)

        start = time.monotonic()
        first = executor.plan(molecules, factory)
        fragmentation = time.monotonic() - start
        schemas = [o.schema_ for o in first.outcomes if o.ok]
        keys = sorted({t.identity.key for s in schemas for t in s.targets})
        cached, remaining = set(keys[::2]), set(keys[1::2])
        console.print(f"{len(keys)} drives; {len(cached)} computed first ({fragmentation:.0f} s fragmenting)")
        submit_drives(stage, schemas, cached, spec)

        plan = executor.plan(molecules, factory)
        assert plan.total.complete == len(cached) and plan.total.to_compute == len(remaining), plan.total
        console.print(plan.summary())
        start = time.monotonic()
        remaining_ids = submit_drives(stage, schemas, remaining, spec)
        wall = time.monotonic() - start
        measured_hours = optimization_seconds(stage.client, remaining_ids) / 3600
        recorded = CostModel.recorded(spec)
        managers.stop()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    table = Table(
        "cost model",
        "s per gradient",
        "gradients per point",
        "estimate core-h",
        "measured core-h",
        "estimate / measured",
        title=f"QC estimate of {len(remaining)} uncached drives ({spec.label}, grid {spec.grid_spacing}°, "
        f"{len(molecules)} molecules; QC stage wall {wall:.0f} s on {args.workers} workers)",
    )
    for name, model in (("measured on the server", plan.cost_model), ("recorded (qc/programs)", recorded)):
        estimate = len(remaining) * model.drive_core_hours(spec)
        table.add_row(
            name,
            f"{model.core_seconds_per_gradient:.3g}",
            f"{model.gradients_per_grid_point:.3g}",
            f"{estimate:.4f}",
            f"{measured_hours:.4f}",
            f"{estimate / measured_hours:.2f}",
        )
    console.print(table)
    console.print(f"measured model: {plan.cost_model.source}; recorded model: {recorded.source}")


if __name__ == "__main__":
    main()
