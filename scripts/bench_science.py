#!/usr/bin/env python
"""Science benchmark: how well bespoke torsions reproduce GFN2-xTB for ten small drug-like molecules.

Runs every molecule through one executor (the xtb workflow, 30° grid by default; with --parent
the parent of every fragment is driven too) and prints one row per fitted torsion: the QC barrier
(max - min of the QC profile), the RMSE of the MM profile against QC before and after the fit
(the frozen protocol ForceBalance and BespokeFit score with, and relaxed scans with only the
dihedral held, on the fragment and, where the parent was driven, on the parent), then the means
and three target checks:

- mean relaxed-scan RMSE after <= 0.4 x before, over all fitted torsions;
- no torsion's relaxed-scan RMSE worse than the base force field's by more than 0.1 kcal/mol;
- parent relaxed-scan RMSE after <= 0.6 x before (means over the torsions whose parent was driven).

The executor directory is kept (--directory): its embedded server stores the drives, so a later
run reuses them. Its job store also keeps the fits: an unchanged job description on the same
drives reuses its fit, whatever the fitting code; --job-store NEW.sqlite fits again. Results
and the molecule table are in docs/science.md.

    .venv/bin/python scripts/bench_science.py [--directory bench-science-executor] [--molecules N]
        [--parent] [--grid-spacing 30] [--n-qc-compute-workers 2] [--json FILE] [--job-store FILE]
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig, wait_until_complete
from bespoke_fractal.workflow import BespokeWorkflowFactory

# name: (SMILES, chemistry covered); 10-14 heavy atoms, 1-3 driven bonds each, 16 drives in all
# with the xtb workflow (symmetry-equivalent bonds are driven once). The first seven cover every
# chemistry, so --molecules 7 is the short version.
MOLECULES: dict[str, tuple[str, str]] = {
    "4-chloro-N-methylbenzamide": ("CNC(=O)c1ccc(Cl)cc1", "secondary amide (aryl-C(=O), C(=O)-N)"),
    "4-(dimethylamino)benzonitrile": ("CN(C)c1ccc(C#N)cc1", "tertiary aniline (aryl-N)"),
    "N,4-dimethylbenzenesulfonamide": ("CNS(=O)(=O)c1ccc(C)cc1", "sulfonamide (aryl-S, S-N)"),
    "1-methyl-3-phenylurea": ("CNC(=O)Nc1ccccc1", "urea (aryl-N, both C(=O)-N)"),
    "diphenyl ether": ("c1ccc(Oc2ccccc2)cc1", "diaryl ether (aryl-O, two equivalent bonds)"),
    "2-methylbiphenyl": ("Cc1ccccc1-c1ccccc1", "ortho-substituted biaryl"),
    "N-phenylpyrimidin-2-amine": ("c1ccc(Nc2ncccn2)cc1", "heteroaryl amine (aryl-NH, pyrimidinyl-NH)"),
    "4-fluorophenetole": ("CCOc1ccc(F)cc1", "aryl alkyl ether (aryl-O, O-CH2)"),
    "4-phenylpyridine": ("c1ccc(-c2ccncc2)cc1", "heteroaryl biaryl"),
    "4-morpholinobenzonitrile": ("N#Cc1ccc(N2CCOCC2)cc1", "cyclic aniline (aryl-N of a morpholine)"),
}

MEAN_RATIO_TARGET = 0.4  # mean relaxed RMSE after / before, all fitted torsions
WORSE_LIMIT = 0.1  # kcal/mol: largest allowed rise of one torsion's relaxed RMSE over the base force field
PARENT_RATIO_TARGET = 0.6  # parent relaxed RMSE after / before where the parent was driven


class Stop(Exception):
    """SIGTERM (or SIGINT): leave the executor's context so that it stops what it started."""


def _on_signal(signum, _frame) -> None:
    # one stop: a second signal must not cut the executor's shutdown short (a handler, not
    # SIG_IGN, which the programs run while stopping would inherit)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopping)
    raise Stop(signal.Signals(signum).name)


def _stopping(signum, _frame) -> None:
    print(f"{signal.Signals(signum).name}: already stopping", flush=True)


def _rmse(score) -> float | None:
    return None if score is None else float(score.rmse)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _bond_label(parent, bonds: list[tuple[int, int]]) -> str:
    """'c4-C7' (lower case: aromatic atom), '+N' for symmetry-equivalent bonds fitted with it."""

    def atom(index: int) -> str:
        a = parent.atoms[index]
        return (a.symbol.lower() if a.is_aromatic else a.symbol) + str(index)

    a, b = bonds[0]
    extra = f" (+{len(bonds) - 1})" if len(bonds) > 1 else ""
    return f"{atom(a)}-{atom(b)}{extra}"


def _frozen_scores(t) -> tuple:
    """Frozen-protocol scores (ForceBalance's/BespokeFit's: dihedral atoms frozen, all atoms
    restrained to the QC geometry), before and as written; older reports call them fragment_*
    and leave reverted parameters to the reader."""
    before = getattr(t, "frozen_before", None)
    if before is not None:
        return before, getattr(t, "frozen_after", None)
    before = getattr(t, "fragment_before", None)
    return before, before if t.kept_initial else getattr(t, "fragment_after", None)


def torsion_rows(output) -> list[dict]:
    """One dict per fitted torsion of a job (empty when it has no fit)."""
    from openff.toolkit import Molecule

    if output.results is None:
        return []
    parent = Molecule.from_mapped_smiles(output.smiles, allow_undefined_stereo=True)
    rows = []
    for t in output.results.torsions:
        barrier = getattr(t, "qc_barrier", None)
        if barrier is None:
            barrier = max(t.qc) - min(t.qc) if t.qc else None
        frozen_before, frozen_after = _frozen_scores(t)
        rows.append(
            {
                "molecule": output.name,
                "job": output.id,
                "target_index": t.target_index,
                "bond": _bond_label(parent, [tuple(b) for b in t.parent_bonds]),
                "parent_bonds": [list(b) for b in t.parent_bonds],
                "qc_points": len(t.qc),
                "qc_barrier": barrier,
                "frozen_before": _rmse(frozen_before),
                "frozen_after": _rmse(frozen_after),
                # relaxed scores as reported: the report already accounts for reverted parameters
                "relaxed_before": _rmse(getattr(t, "relaxed_before", None)),
                "relaxed_after": _rmse(getattr(t, "relaxed_after", None)),
                "parent_relaxed_before": _rmse(getattr(t, "parent_relaxed_before", None)),
                "parent_relaxed_after": _rmse(getattr(t, "parent_relaxed_after", None)),
                "kept_initial": bool(t.kept_initial),
            }
        )
    return rows


def target_checks(rows: list[dict]) -> list[dict]:
    """The three targets, each with pass/fail (None when the reports lack the scores) and numbers."""
    relaxed = [r for r in rows if r["relaxed_before"] is not None and r["relaxed_after"] is not None]
    parent = [
        r for r in rows if r["parent_relaxed_before"] is not None and r["parent_relaxed_after"] is not None
    ]
    checks = []
    before, after = (
        _mean([r["relaxed_before"] for r in relaxed]),
        _mean([r["relaxed_after"] for r in relaxed]),
    )
    if relaxed and before:
        ratio = after / before
        checks.append(
            {
                "target": f"mean relaxed RMSE after <= {MEAN_RATIO_TARGET} x before",
                "passed": ratio <= MEAN_RATIO_TARGET,
                "value": f"{after:.3f} / {before:.3f} = {ratio:.2f} over {len(relaxed)} torsions",
            }
        )
    else:
        checks.append(
            {
                "target": f"mean relaxed RMSE after <= {MEAN_RATIO_TARGET} x before",
                "passed": None,
                "value": "no relaxed-scan scores in the fit reports",
            }
        )
    if relaxed:
        worst = max(relaxed, key=lambda r: r["relaxed_after"] - r["relaxed_before"])
        rise = worst["relaxed_after"] - worst["relaxed_before"]
        n_over = sum(r["relaxed_after"] - r["relaxed_before"] > WORSE_LIMIT for r in relaxed)
        checks.append(
            {
                "target": f"no torsion's relaxed RMSE worse than the base force field by > {WORSE_LIMIT}",
                "passed": n_over == 0,
                "value": f"largest change {rise:+.3f} ({worst['molecule']} {worst['bond']}); "
                f"{n_over} of {len(relaxed)} over",
            }
        )
    else:
        checks.append(
            {
                "target": f"no torsion's relaxed RMSE worse than the base force field by > {WORSE_LIMIT}",
                "passed": None,
                "value": "no relaxed-scan scores in the fit reports",
            }
        )
    p_before = _mean([r["parent_relaxed_before"] for r in parent])
    p_after = _mean([r["parent_relaxed_after"] for r in parent])
    if parent and p_before:
        ratio = p_after / p_before
        each = sum(
            r["parent_relaxed_after"] <= PARENT_RATIO_TARGET * r["parent_relaxed_before"] for r in parent
        )
        checks.append(
            {
                "target": f"parent relaxed RMSE after <= {PARENT_RATIO_TARGET} x before (parent driven)",
                "passed": ratio <= PARENT_RATIO_TARGET,
                "value": f"{p_after:.3f} / {p_before:.3f} = {ratio:.2f} over {len(parent)} torsions "
                f"({each} meet it one by one)",
            }
        )
    else:
        checks.append(
            {
                "target": f"parent relaxed RMSE after <= {PARENT_RATIO_TARGET} x before (parent driven)",
                "passed": None,
                "value": "no parent was driven (run with --parent)",
            }
        )
    return checks


class Progress:
    """Prints a line whenever a job changes stage, status or QC count."""

    def __init__(self, executor: BespokeExecutor, job_ids: list[str], start: float) -> None:
        self.executor, self.job_ids, self.start = executor, job_ids, start
        self.last: dict[str, tuple] = {}

    def __call__(self, _output) -> None:
        for job_id in self.job_ids:
            o = self.executor.retrieve(job_id)
            stage = o.stage
            state = (o.status, stage.type, stage.status, o.qc.complete, o.qc.total, o.qc.errored)
            if self.last.get(job_id) == state:
                continue
            self.last[job_id] = state
            qc = f", QC {o.qc.complete}/{o.qc.total} drives" if o.qc.total else ""
            errored = f" ({o.qc.errored} errored)" if o.qc.errored else ""
            print(
                f"[{time.monotonic() - self.start:6.0f} s] job {o.id} {o.name}: {o.status}, "
                f"{stage.type} {stage.status}{qc}{errored}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", type=Path, default=Path("bench-science-executor"))
    parser.add_argument("--molecules", type=int, help=f"only the first N of the {len(MOLECULES)} molecules")
    parser.add_argument("--parent", action="store_true", help="drive the parent as well (drive_parent=True)")
    parser.add_argument("--grid-spacing", type=int, default=30)
    parser.add_argument("--n-qc-compute-workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows, means, checks and timings here")
    parser.add_argument(
        "--job-store",
        type=Path,
        help="SQLite job store, relative to DIR (default: DIR's jobs.sqlite, where a molecule whose "
        "job description and drives are unchanged reuses its earlier fit); a new file fits again "
        "with the drives cached on DIR's server, e.g. after the fitting code changed",
    )
    args = parser.parse_args()

    molecules = dict(list(MOLECULES.items())[: args.molecules])
    changes: dict = {"qc_spec.grid_spacing": args.grid_spacing}
    if args.parent:
        changes["drive_parent"] = True
    factory = BespokeWorkflowFactory.from_preset("xtb", **changes)
    executor = BespokeExecutor(
        n_qc_compute_workers=args.n_qc_compute_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=1),
        directory=args.directory,
        database_url=f"sqlite:///{(args.directory / args.job_store).absolute()}" if args.job_store else None,
        poll_interval=1.0,
    )
    console = Console(width=200)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)

    console.print(
        f"{len(molecules)} molecules, {factory.qc_spec.label}, {args.grid_spacing}° grid"
        f"{', parents driven' if args.parent else ''}; executor directory {args.directory.absolute()}"
    )
    started_at = datetime.now()
    start = time.monotonic()
    qc_compute = None
    try:
        with executor:
            console.print(f"executor started in {time.monotonic() - start:.0f} s")
            job_ids = [executor.submit(smiles, factory, name=name) for name, (smiles, _) in molecules.items()]
            progress = Progress(executor, job_ids, start)
            outputs = [wait_until_complete(job_id, frequency=5.0, on_update=progress) for job_id in job_ids]
            wall = time.monotonic() - start
            qc_compute = _qc_compute(executor, outputs)
    except Stop as stop:
        console.print(f"{stop}: stopped the executor and what it started; the drives stay on its server")
        raise SystemExit(130 if str(stop) == "SIGINT" else 143) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.default_int_handler)

    report(
        outputs,
        qc_label=factory.qc_spec.label,
        grid_spacing=args.grid_spacing,
        parent=args.parent,
        wall=wall,
        qc_compute=qc_compute,
        started_at=started_at,
        json_path=args.json,
        console=console,
    )


def report(
    outputs,
    qc_label: str,
    grid_spacing: int,
    parent: bool,
    wall: float | None,
    qc_compute: tuple[float, int] | None,
    started_at: datetime | None,
    json_path: Path | None,
    console: Console,
) -> None:
    """Print the job table, the per-torsion table with its means, and the target checks (and
    write them to ``json_path``) for the outputs of finished jobs."""
    timing = Table(
        "molecule",
        "status",
        "drives",
        "new",
        "fragmentation s",
        "QC stage s",
        "optimisation stage s",
        "ForceBalance s",
        "FB iterations",
        title="jobs (stage seconds overlap: the jobs run together, and a fit waits for a free optimiser)",
    )
    rows: list[dict] = []
    jobs = []
    for output in outputs:
        stages = {stage.type: stage.seconds for stage in output.stages}
        results = output.results
        timing.add_row(
            output.name,
            output.status,
            str(output.qc.total),
            str(output.qc.new),
            _fmt(stages.get("fragmentation"), 0),
            _fmt(stages.get("qc-generation"), 0),
            _fmt(stages.get("optimization"), 0),
            _fmt(results.fit_seconds, 0) if results else "-",
            str(results.iterations) if results else "-",
        )
        rows.extend(torsion_rows(output))
        jobs.append(
            {
                "id": output.id,
                "name": output.name,
                "smiles": MOLECULES.get(output.name, (output.smiles, ""))[0],
                "status": output.status,
                "error": output.error,
                "drives": output.qc.total,
                "new_drives": output.qc.new,
                "stage_seconds": stages,
                "fit_seconds": results.fit_seconds if results else None,
                "iterations": results.iterations if results else None,
                "unfitted": [u.model_dump(mode="json") for u in results.unfitted] if results else [],
            }
        )
    console.print(timing)
    for output in outputs:
        if output.error:
            console.print(f"Error: {output.error}", markup=False, highlight=False)
        for unfitted in output.results.unfitted if output.results else []:
            console.print(
                f"{output.name}: target {unfitted.target_index} not fitted: {unfitted.reason}",
                markup=False,
                highlight=False,
            )

    table = Table(
        "molecule",
        "bond",
        "QC barrier",
        "frozen before",
        "frozen after",
        "relaxed before",
        "relaxed after",
        "parent relaxed before",
        "parent relaxed after",
        "kept initial",
        title=f"per torsion: RMSE against {qc_label}, kcal/mol, {grid_spacing}° grid",
    )
    for r in rows:
        table.add_row(
            r["molecule"],
            r["bond"],
            _fmt(r["qc_barrier"]),
            _fmt(r["frozen_before"]),
            _fmt(r["frozen_after"]),
            _fmt(r["relaxed_before"]),
            _fmt(r["relaxed_after"]),
            _fmt(r["parent_relaxed_before"]),
            _fmt(r["parent_relaxed_after"]),
            "yes" if r["kept_initial"] else "no",
        )
    means = {
        key: _mean([r[key] for r in rows if r[key] is not None])
        for key in (
            "qc_barrier",
            "frozen_before",
            "frozen_after",
            "relaxed_before",
            "relaxed_after",
            "parent_relaxed_before",
            "parent_relaxed_after",
        )
    }
    table.add_section()
    table.add_row(
        f"mean of {len(rows)}",
        "",
        *(_fmt(means[key]) for key in list(means)),
        str(sum(r["kept_initial"] for r in rows)),
    )
    console.print(table)

    checks = target_checks(rows)
    summary = Table("target", "result", "numbers (kcal/mol)", title="targets")
    for check in checks:
        result = {True: "pass", False: "FAIL", None: "n/a"}[check["passed"]]
        summary.add_row(check["target"], result, check["value"])
    console.print(summary)
    compute_line = (
        f"; QC compute recorded by QCFractal {qc_compute[0]:.0f} s in {qc_compute[1]} optimisations"
        if qc_compute
        else ""
    )
    drives = len({i for o in outputs for i in o.qc.record_ids})
    wall_line = f"wall time {wall:.0f} s for " if wall is not None else ""
    console.print(
        f"{wall_line}{len(outputs)} jobs, {drives} drives "
        f"({sum(o.qc.new for o in outputs)} new){compute_line}"
    )

    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "started_at": started_at.isoformat(timespec="seconds") if started_at else None,
                    "workflow": "xtb",
                    "grid_spacing": grid_spacing,
                    "parent": parent,
                    "wall_seconds": wall,
                    "qc_compute_seconds": qc_compute[0] if qc_compute else None,
                    "jobs": jobs,
                    "torsions": rows,
                    "means": means,
                    "checks": checks,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        console.print(f"wrote {json_path}")


def _qc_compute(executor: BespokeExecutor, outputs) -> tuple[float, int] | None:
    """QC compute seconds QCFractal recorded for all the jobs' drives (each drive once), and the
    number of optimisations; None for an external server or when it cannot be read."""
    try:
        from bench_executor import qc_task_times

        from bespoke_fractal.server import EmbeddedServer

        record_ids = sorted({i for o in outputs for i in o.qc.record_ids})
        if not record_ids or executor.fractal_server is not None:
            return None
        client = EmbeddedServer(executor.directory).connection("admin").client()
        seconds, count, _first, _last = qc_task_times(client, record_ids)
        return seconds, count
    except Exception as exc:  # a measurement only: never lose the results for it
        print(f"(QC compute time not read: {exc})")
        return None


if __name__ == "__main__":
    main()
