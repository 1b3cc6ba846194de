"""``bespoke-fractal executor ...``: launch, submit, watch, list, retrieve and run bespoke fits."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import click
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bespoke_fractal.cli_options import (
    factory_from_options,
    one_line,
    verbose,
    with_options,
    with_workflow_options,
)

console = Console()
errors = Console(stderr=True)

DATABASE_ENV = "BESPOKE_FRACTAL_DATABASE_URL"
LOG_NAME = "executor.log"


def _check_database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A database URL with a password may come from the environment only (never argv)."""
    if value and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
        from sqlalchemy.engine import make_url

        try:
            has_password = make_url(value).password is not None
        except Exception:  # noqa: BLE001 - malformed: the store reports it
            has_password = ":" in value.split("@")[0].split("//")[-1] and "@" in value
        if has_password:
            raise click.BadParameter(
                f"a password on the command line shows in 'ps': put the URL in {DATABASE_ENV}",
                param_hint="--database-url",
            )
    return value


def executor_directory_options(function):
    """--directory and --database-url, shared by every executor command."""
    function = click.option(
        "--database-url",
        envvar=DATABASE_ENV,
        callback=_check_database_url,
        help=f"SQLAlchemy URL of the job store (default: SQLite in DIR; with a password: {DATABASE_ENV}).",
    )(function)
    return click.option(
        "--directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("bespoke-executor"),
        show_default=True,
        help="Executor directory: job store, AM1 cache, fits, and the embedded server.",
    )(function)


FRACTAL_OPTIONS = [
    click.option(
        "--fractal-address",
        help="URL of an external QCFractal server (default: the embedded server in DIR).",
    ),
    click.option(
        "--fractal-credentials",
        type=click.Path(dir_okay=False, path_type=Path),
        help="YAML file with username and password (and address) for that server; chmod 600. "
        "Without it QCPORTAL_USERNAME / QCPORTAL_PASSWORD are used.",
    ),
]


def launch_options(function):
    """Worker and server options of ``launch`` and ``run`` (names as in openff-bespokefit)."""
    options = [
        click.option("--n-fragmenter-workers", type=int, default=1, show_default=True),
        click.option("--n-optimizer-workers", type=int, default=1, show_default=True),
        click.option(
            "--n-qc-compute-workers",
            type=int,
            default=1,
            show_default=True,
            help="Compute managers started for the embedded server (0: managers run elsewhere).",
        ),
        click.option(
            "--qc-compute-n-cores",
            default="auto",
            show_default=True,
            help="Cores of each QC compute worker, or 'auto' for all of them.",
        ),
        click.option(
            "--qc-compute-max-mem",
            default="auto",
            show_default=True,
            help="GB of memory per core of a QC compute worker (passed to qcengine).",
        ),
        click.option("--optimizer-n-cores", type=int, default=1, show_default=True),
        *FRACTAL_OPTIONS,
    ]
    return with_options(options)(function)


def _number(value: str, name: str) -> int | float | str:
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a number or 'auto'", param_hint=name) from None
    return int(number) if number.is_integer() else number


def _executor(directory: Path, database_url: str | None, **options):
    from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig
    from bespoke_fractal.session import fractal_connection

    try:
        qc_config = BespokeWorkerConfig(
            n_cores=_number(options["qc_compute_n_cores"], "--qc-compute-n-cores"),
            max_memory=_number(options["qc_compute_max_mem"], "--qc-compute-max-mem"),
        )
        optimizer_config = BespokeWorkerConfig(n_cores=options["optimizer_n_cores"])
    except ValidationError as exc:
        raise click.BadParameter(one_line(exc).split(": ", 1)[-1]) from None
    return BespokeExecutor(
        n_fragmenter_workers=options["n_fragmenter_workers"],
        n_qc_compute_workers=options["n_qc_compute_workers"],
        qc_compute_worker_config=qc_config,
        n_optimizer_workers=options["n_optimizer_workers"],
        optimizer_worker_config=optimizer_config,
        directory=directory,
        fractal_server=fractal_connection(options["fractal_address"], options["fractal_credentials"]),
        database_url=database_url,
    )


def _store(directory: Path, database_url: str | None):
    from bespoke_fractal.executor import JobStore

    return JobStore.in_directory(directory, database_url)


# -- progress ---------------------------------------------------------------------------------
def stage_summary(output) -> str:
    """One line per job: each stage's state, the QC drives and the latest note."""
    parts = []
    for stage in output.stages:
        text = f"{stage.type} {stage.status}"
        if stage.type == "qc-generation" and output.qc.total:
            qc = output.qc
            text += f" ({qc.complete}/{qc.total} drives done"
            text += f", {qc.running} running" if qc.running and stage.status == "running" else ""
            text += f", {qc.errored} errored)" if qc.errored else ")"
            if qc.blocked:
                text += f" - {qc.blocked}"
        elif stage.status == "running" and stage.note:
            text += f" ({stage.note})"
        parts.append(text)
    return f"job {output.id} ({output.name}): " + " | ".join(parts)


def _table(outputs) -> Table:
    table = Table("job", "molecule", "status", "fragmentation", "QC drives", "optimisation", "error")
    for output in outputs:
        stages = {stage.type: stage for stage in output.stages}
        qc = output.qc
        drives = f"{qc.complete}/{qc.total}" + (f" ({qc.errored} errored)" if qc.errored else "")
        fit = stages["optimization"]
        table.add_row(
            output.id,
            output.name,
            output.status,
            stages["fragmentation"].status,
            drives if qc.total else stages["qc-generation"].status,
            f"{fit.status}" + (f": {fit.note}" if fit.note and fit.status == "running" else ""),
            (output.error or "").split(": ", 1)[-1][:80],
        )
    return table


def watch_jobs(store, job_ids: list[str], interval: float = 2.0, check=None) -> list:
    """Show progress until every job has ended; live table on a terminal, lines otherwise.

    ``check`` is called before every update and may raise to stop watching.
    """
    from bespoke_fractal.executor.executor import FINAL

    def read() -> list:
        if check is not None:
            check()
        return [store.output(job_id) for job_id in job_ids]

    outputs = read()
    if console.is_terminal:
        with Live(_table(outputs), console=console, refresh_per_second=2) as live:
            while not all(o.status in FINAL for o in outputs):
                time.sleep(interval)
                outputs = read()
                live.update(_table(outputs))
        return outputs
    shown: dict[str, str] = {}
    while True:
        for output in outputs:
            line = stage_summary(output)
            if shown.get(output.id) != line:
                click.echo(line)
                shown[output.id] = line
        if all(o.status in FINAL for o in outputs):
            return outputs
        time.sleep(interval)
        outputs = read()


def _arrow(before: str, after: str) -> str:
    return f"{before} → {after}" if before else "-"


def _report(outputs, output_directory: Path | None, log_file: Path | None = None) -> int:
    """Write results (if asked), print RMSE tables and error lines; return the failures."""
    from bespoke_fractal.executor.output import rmse_rows, write_job_output

    failed = 0
    for output in outputs:
        if output_directory is not None:
            target = output_directory if len(outputs) == 1 else output_directory / f"job-{output.id}"
            written = write_job_output(output, target)
            console.print(f"job {output.id}: wrote {', '.join(p.name for p in written[:3])} to {target}")
        rows = rmse_rows(output)
        if rows:
            parents = any(row["parent_relaxed_rmse_before_kcal_mol"] for row in rows)
            table = Table(
                "target",
                "bonds",
                "QC barrier",
                "relaxed RMSE before → after",
                "frozen RMSE before → after",
                *(["parent relaxed before → after"] if parents else []),
                "kept initial",
                title=f"job {output.id}: RMSE against QC (kcal/mol)",
                caption="relaxed: MM scan with only the dihedral held (judges the fit); frozen: "
                "ForceBalance/BespokeFit protocol; MM shifted by its mean offset",
            )
            for row in rows:
                table.add_row(
                    row["target"],
                    row["parent_bonds"],
                    row["qc_barrier_kcal_mol"] or "-",
                    _arrow(row["relaxed_rmse_before_kcal_mol"], row["relaxed_rmse_after_kcal_mol"]),
                    _arrow(row["frozen_rmse_before_kcal_mol"], row["frozen_rmse_after_kcal_mol"]),
                    *(
                        [
                            _arrow(
                                row["parent_relaxed_rmse_before_kcal_mol"],
                                row["parent_relaxed_rmse_after_kcal_mol"],
                            )
                        ]
                        if parents
                        else []
                    ),
                    row["kept_initial"],
                )
            console.print(table)
            for row in rows:
                if row["note"].startswith("not fitted"):
                    where = f"job {output.id}, target {row['target']} ({row['parent_bonds']})"
                    errors.print(f"Warning: {where}: {row['note']}")
        if output.status != "success":
            failed += 1
            if verbose():
                for stage in output.stages:
                    errors.print(f"job {output.id} {stage.type}: {stage.status}; {stage.note or '-'}")
                if log_file is not None:
                    errors.print(f"tracebacks, if any, are in {log_file}")
            click.echo(f"Error: {output.error or f'job {output.id} is {output.status}'}", err=True)
    return failed


# -- commands ---------------------------------------------------------------------------------
@click.group()
def executor() -> None:
    """The bespoke executor: fragmentation and fits here, QC torsion drives on QCFractal."""


@executor.command("launch")
@executor_directory_options
@launch_options
def launch(directory: Path, database_url: str | None, **options) -> None:
    """Run the executor in the foreground until Ctrl-C (or SIGTERM), then stop cleanly.

    Starts the embedded server and compute managers unless they run already (or an external
    server is named), and works on every job in DIR's job store, resuming unfinished ones.
    """
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if not stop.is_set():
            errors.print(f"{signal.Signals(signum).name}: stopping the executor…")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    executor_ = _executor(directory, database_url, **options)

    def ready() -> None:
        console.print(f"executor running on {executor_.directory} (Ctrl-C to stop); log: executor.log")

    executor_.run_in_foreground(stop, on_ready=ready)
    console.print("executor stopped")


def plan_table(plan) -> Table:
    """Per molecule and in total: targets, drives, cached, in progress, to compute, core-hours."""
    table = Table(
        "molecule",
        "targets",
        "drives",
        "complete",
        "in progress",
        "to compute",
        "core-h",
        title=f"QC plan: {plan.qc_spec}, grid {plan.grid_spacing}°",
    )
    for molecule in plan.molecules:
        if molecule.error:
            table.add_row(molecule.name, "-", "-", "-", "-", "-", "-", end_section=False)
            continue
        d = molecule.drives
        table.add_row(
            molecule.name,
            str(d.targets),
            _drives(d),
            str(d.complete) if plan.server_checked else "?",
            str(d.in_progress) if plan.server_checked else "?",
            str(d.to_compute),
            f"{molecule.estimated_core_hours:.3g}",
        )
    t = plan.total
    checked = plan.server_checked
    table.add_section()
    table.add_row(
        "total",
        str(t.targets),
        _drives(t),
        str(t.complete) if checked else "?",
        str(t.in_progress) if checked else "?",
        str(t.to_compute),
        f"{plan.estimated_core_hours:.3g}",
    )
    return table


def _drives(counts) -> str:
    """Distinct drives, with how many are of whole parents (drive_parent)."""
    return f"{counts.unique} ({counts.parent} parent)" if counts.parent else str(counts.unique)


def print_plan(plan, console_: Console) -> None:
    """The plan table, each molecule without drives with its reason, the summary line and the
    cost model's source."""
    console_.print(plan_table(plan))
    for molecule in plan.molecules:
        if molecule.error:
            reason = molecule.error.removeprefix(f"{molecule.name}: ")
            console_.print(f"{molecule.name}: no drives ({reason})", markup=False, highlight=False)
    console_.print(plan.summary(), markup=False, highlight=False)
    console_.print(f"cost model: {plan.cost_model.source}", markup=False, highlight=False)


def _submit(executor_, smiles, files, factory, enumerate_stereo: bool, plan: bool) -> tuple[list[str], int]:
    """Queue every molecule; a bad one is one error line and does not stop the others. With
    ``plan`` the batch is fragmented here first and its QC plan shown (on stderr) before queueing."""
    from bespoke_fractal.errors import BespokeFractalError
    from bespoke_fractal.executor import submit_plan, submit_to_store
    from bespoke_fractal.molecules import load_molecules

    items = [item for source in [*smiles, *files] for item in load_molecules(source, enumerate_stereo)]
    store = executor_._store()
    if plan:
        batch_plan = executor_.plan(items, factory, start_server=False)
        print_plan(batch_plan, errors)
        queued = submit_plan(store, batch_plan)
    else:
        queued = []
        for item in items:
            try:
                queued.append(submit_to_store(store, item, factory))
            except BespokeFractalError as exc:
                queued.append(exc)
    job_ids, failed = [], 0
    for item, job_id in zip(items, queued, strict=True):
        if isinstance(job_id, Exception):
            click.echo(f"Error: {job_id}", err=True)
            failed += 1
            continue
        job_ids.append(job_id)
        console.print(f"job {job_id}: {item.name}")
    return job_ids, failed


def molecule_options(function):
    options = [
        click.option("--smiles", multiple=True, help="Molecule as SMILES (repeatable)."),
        click.option(
            "--file",
            "files",
            multiple=True,
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="SDF/MOL/MOL2 file; every record is one job (repeatable).",
        ),
        click.option(
            "--target-torsion",
            "target_torsions",
            multiple=True,
            metavar="SMARTS",
            help="Bonds to fit, as SMARTS with atoms :1 and :2 on the bond (repeatable; "
            "default: every rotatable bond).",
        ),
        click.option("--enumerate-stereo", is_flag=True, help="Fit every stereoisomer of undefined stereo."),
        click.option(
            "--drive-parent",
            is_flag=True,
            help="Also drive each target bond on the whole parent molecule (same QC spec, more QC) "
            "and score the fit on it (the workflow's drive_parent).",
        ),
    ]
    return with_workflow_options(with_options(options)(function))


def plan_option(function):
    return click.option(
        "--plan/--no-plan",
        default=True,
        show_default=True,
        help="Fragment the batch here and show its QC plan (cached drives, drives to compute, "
        "estimated core-hours) before queueing; --no-plan queues at once.",
    )(function)


def _factory(preset, workflow_file, changes, target_torsions, drive_parent=False):
    factory = factory_from_options(preset, workflow_file, changes)
    if target_torsions:
        factory = factory.with_changes({"target_torsion_smirks": list(target_torsions)})
    if drive_parent:
        factory = factory.with_changes({"drive_parent": True})
    return factory


@executor.command("submit")
@executor_directory_options
@molecule_options
@plan_option
def submit(
    directory,
    database_url,
    smiles,
    files,
    target_torsions,
    enumerate_stereo,
    drive_parent,
    preset,
    workflow_file,
    changes,
    plan,
) -> None:
    """Queue fits and print their job ids (a running executor on DIR picks them up).

    The QC plan goes to stderr; it checks the cache of the embedded server when that runs."""
    from bespoke_fractal.executor import BespokeExecutor
    from bespoke_fractal.executor.service import DirectoryLock

    if not smiles and not files:
        raise click.UsageError("give at least one --smiles or --file")
    factory = _factory(preset, workflow_file, changes, target_torsions, drive_parent)
    directory.mkdir(parents=True, exist_ok=True)
    executor_ = BespokeExecutor(directory=directory, database_url=database_url)
    executor_.store = _store(directory, database_url)
    _job_ids, failed = _submit(executor_, smiles, files, factory, enumerate_stereo, plan)
    if DirectoryLock(directory).holder() is None:
        errors.print(
            f"note: no executor is running on {directory}; the jobs wait until one does "
            f"('bespoke-fractal executor launch --directory {directory}')"
        )
    if failed:
        sys.exit(1)


@executor.command("plan")
@executor_directory_options
@molecule_options
@with_options(FRACTAL_OPTIONS)
@click.option("--n-fragmenter-workers", type=int, default=1, show_default=True)
@click.option(
    "--qc-compute-n-cores",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Cores of each QC task, to turn task seconds into core-hours.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(
    directory,
    database_url,
    smiles,
    files,
    target_torsions,
    enumerate_stereo,
    drive_parent,
    preset,
    workflow_file,
    changes,
    fractal_address,
    fractal_credentials,
    n_fragmenter_workers,
    qc_compute_n_cores,
    as_json,
) -> None:
    """What the fits of these molecules need from QC, and what the server already has.

    Fragments the molecules (with DIR's AM1 cache), works out every torsion drive, and asks the
    server which exist for the QC spec, submitting nothing. Exit 1 if a molecule has no drives.
    """
    from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig
    from bespoke_fractal.molecules import load_molecules
    from bespoke_fractal.session import fractal_connection

    if not smiles and not files:
        raise click.UsageError("give at least one --smiles or --file")
    factory = _factory(preset, workflow_file, changes, target_torsions, drive_parent)
    executor_ = BespokeExecutor(
        n_fragmenter_workers=n_fragmenter_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=qc_compute_n_cores),
        directory=directory,
        fractal_server=fractal_connection(fractal_address, fractal_credentials),
        database_url=database_url,
    )
    items = [item for source in [*smiles, *files] for item in load_molecules(source, enumerate_stereo)]
    result = executor_.plan(items, factory)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        print_plan(result, console)
    if any(molecule.error for molecule in result.molecules):
        sys.exit(1)


@executor.command("watch")
@executor_directory_options
@click.option("--id", "job_ids", multiple=True, required=True, help="Job id (repeatable).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between updates.")
def watch(directory, database_url, job_ids, interval) -> None:
    """Show live stage progress until the jobs end; exit 1 if any failed."""
    from bespoke_fractal.executor.service import DirectoryLock

    store = _store(directory, database_url)
    for job_id in job_ids:
        store.output(job_id)  # an unknown id is one error line now
    lock = DirectoryLock(directory)
    noted = []

    def note_idle() -> None:
        if lock.holder() is None and not noted:
            errors.print(f"note: no executor is running on {directory}; waiting for one to be launched")
            noted.append(True)

    if _report(watch_jobs(store, list(job_ids), interval, check=note_idle), None, directory / LOG_NAME):
        sys.exit(1)


@executor.command("list")
@executor_directory_options
@click.option("--status", type=click.Choice(["waiting", "running", "success", "errored"]))
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def list_jobs(directory, database_url, status, as_json) -> None:
    """Every job with its status and stages."""
    import json

    outputs = _store(directory, database_url).outputs(status)
    if as_json:
        click.echo(json.dumps([o.model_dump(mode="json", exclude={"offxml"}) for o in outputs], indent=2))
        return
    console.print(_table(outputs))


@executor.command("retrieve")
@executor_directory_options
@click.option("--id", "job_id", required=True, help="Job id.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for force-field.offxml, result.json, rmse.csv and plots/.",
)
def retrieve(directory, database_url, job_id, output) -> None:
    """Write a job's force field, result, RMSE table and plots; exit 1 if it did not succeed."""
    if _report([_store(directory, database_url).output(job_id)], output, directory / LOG_NAME):
        sys.exit(1)


@executor.command("run")
@executor_directory_options
@molecule_options
@plan_option
@launch_options
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the results (one job-<id>/ per molecule when there are several).",
)
def run(
    directory,
    database_url,
    smiles,
    files,
    target_torsions,
    enumerate_stereo,
    drive_parent,
    preset,
    workflow_file,
    changes,
    plan,
    output,
    **options,
) -> None:
    """Launch, submit, watch and retrieve in one command, then stop what was started."""
    from bespoke_fractal.executor import ExecutorError

    if not smiles and not files:
        raise click.UsageError("give at least one --smiles or --file")
    factory = _factory(preset, workflow_file, changes, target_torsions, drive_parent)
    start = time.monotonic()
    with _executor(directory, database_url, **options) as executor_:
        console.print(f"executor running on {executor_.directory} ({time.monotonic() - start:.1f} s)")
        job_ids, failed = _submit(executor_, smiles, files, factory, enumerate_stereo, plan)

        def alive() -> None:
            if not executor_.running:
                raise ExecutorError(f"the coordinator stopped; see {executor_.directory / 'executor.log'}")

        outputs = watch_jobs(executor_._store(), job_ids, check=alive) if job_ids else []
    failed += _report(outputs, output, directory / LOG_NAME)
    console.print(f"wall time {time.monotonic() - start:.1f} s")
    if failed:
        sys.exit(1)
