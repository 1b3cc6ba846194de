"""``bespoke-fractal executor ...``: launch, submit, plan, watch, list, retrieve and run bespoke fits.

Each command is a few lines over :class:`~bespoke_fractal.executor.JobClient` (the jobs) and
:class:`~bespoke_fractal.executor.BespokeExecutor` (the services that work on them)."""

from __future__ import annotations

import functools
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError
from rich.live import Live

from bespoke_fractal.cli.options import (
    F,
    directory_option,
    enumerate_stereo_option,
    factory_from_options,
    file_option,
    fractal_options,
    one_line,
    require_molecules,
    smiles_option,
    verbose,
    with_options,
    with_workflow_options,
)
from bespoke_fractal.cli.tables import (
    combine_table,
    console,
    errors,
    jobs_table,
    print_plan,
    rmse_table,
    stage_summary,
)

if TYPE_CHECKING:
    from bespoke_fractal.executor import BespokeExecutor, BespokeExecutorOutput, JobClient
    from bespoke_fractal.workflow import BespokeWorkflowFactory

DATABASE_ENV = "BESPOKE_FRACTAL_DATABASE_URL"
LOG_NAME = "executor.log"


# -- options ----------------------------------------------------------------------------------
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


# --directory and --database-url, shared by every executor command
executor_directory_options = with_options(
    [
        directory_option("Executor directory: job store, AM1 cache, fits, and the embedded server."),
        click.option(
            "--database-url",
            envvar=DATABASE_ENV,
            callback=_check_database_url,
            help="SQLAlchemy URL of the job store "
            f"(default: SQLite in DIR; with a password: {DATABASE_ENV}).",
        ),
    ]
)

FRACTAL_OPTIONS = fractal_options(
    "URL of an external QCFractal server (default: the embedded server in DIR).",
    "YAML file with username and password (and address) for that server; chmod 600. "
    "Without it QCPORTAL_USERNAME / QCPORTAL_PASSWORD are used.",
)

# worker and server options of ``launch`` and ``run`` (names as in openff-bespokefit)
launch_options = with_options(
    [
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
)


def molecule_options(function: F) -> F:
    """The molecules to fit and how: --smiles, --file, target torsions, stereo, drive_parent,
    and the workflow options."""
    options = [
        smiles_option("Molecule as SMILES (repeatable)."),
        file_option("SDF/MOL/MOL2 file; every record is one job (repeatable)."),
        click.option(
            "--target-torsion",
            "target_torsions",
            multiple=True,
            metavar="SMARTS",
            help="Bonds to fit, as SMARTS with atoms :1 and :2 on the bond (repeatable; "
            "default: every rotatable bond).",
        ),
        enumerate_stereo_option("Fit every stereoisomer of undefined stereo."),
        click.option(
            "--drive-parent",
            is_flag=True,
            help="Also drive each target bond on the whole parent molecule (same QC spec, more QC) "
            "and score the fit on it (the workflow's drive_parent).",
        ),
    ]

    @functools.wraps(function)
    def command(
        smiles: tuple[str, ...],
        files: tuple[Path, ...],
        target_torsions: tuple[str, ...],
        enumerate_stereo: bool,
        drive_parent: bool,
        preset: str | None,
        workflow_file: Path | None,
        changes: tuple[str, ...],
        **rest: Any,
    ) -> Any:
        require_molecules(smiles, files)
        factory = _factory(preset, workflow_file, changes, target_torsions, drive_parent)
        request = MoleculeRequest(
            sources=[*smiles, *files], factory=factory, enumerate_stereo=enumerate_stereo
        )
        return function(molecules=request, **rest)

    return with_workflow_options(with_options(options)(command))  # type: ignore[return-value]


@dataclass(frozen=True)
class MoleculeRequest:
    """What ``molecule_options`` read: the molecules to fit and the workflow to fit them with."""

    sources: list[str | Path]
    factory: BespokeWorkflowFactory
    enumerate_stereo: bool


combined_output_option = click.option(
    "--combined-output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also combine the successful jobs into one checked force field (and FILE's "
    "<stem>.combine.json report); see 'executor combine'.",
)


plan_option = click.option(
    "--plan/--no-plan",
    default=True,
    show_default=True,
    help="Fragment the batch here and show its QC plan (cached drives, drives to compute, "
    "estimated core-hours) before queueing; --no-plan queues at once.",
)


# -- helpers ----------------------------------------------------------------------------------
def _number(value: str, name: str) -> int | float | str:
    if value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a number or 'auto'", param_hint=name) from None
    return int(number) if number.is_integer() else number


def _executor(directory: Path, database_url: str | None, **options: Any) -> BespokeExecutor:
    """The executor of ``launch`` and ``run`` from their options."""
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


def _job_client(directory: Path, database_url: str | None) -> JobClient:
    from bespoke_fractal.executor import JobClient

    return JobClient(directory, database_url)


def _file_client(directory: Path) -> JobClient:
    """A client that is only asked to read written job files (the store is never opened)."""
    from bespoke_fractal.executor import JobClient

    return JobClient(directory)


def _factory(
    preset: str | None,
    workflow_file: Path | None,
    changes: Sequence[str],
    target_torsions: Sequence[str],
    drive_parent: bool = False,
) -> BespokeWorkflowFactory:
    factory = factory_from_options(preset, workflow_file, changes)
    if target_torsions:
        factory = factory.with_changes({"target_torsion_smirks": list(target_torsions)})
    if drive_parent:
        factory = factory.with_changes({"drive_parent": True})
    return factory


def _submit(client: JobClient, molecules: MoleculeRequest, plan: bool) -> tuple[list[str], int]:
    """Queue every molecule, printing each job id (or error line); with ``plan`` the QC plan is
    shown on stderr first. Returns the job ids and how many molecules were not queued."""
    submissions = client.submit_batch(
        molecules.sources,
        molecules.factory,
        enumerate_stereo=molecules.enumerate_stereo,
        plan=plan,
        on_plan=lambda batch_plan: print_plan(batch_plan, errors),
    )
    for submission in submissions:
        if submission.ok:
            console.print(f"job {submission.job_id}: {submission.name}")
        else:
            click.echo(f"Error: {submission.error}", err=True)
    return [s.job_id for s in submissions if s.ok], sum(not s.ok for s in submissions)


def watch_jobs(
    client: JobClient, job_ids: Sequence[str], interval: float = 2.0, check: Callable[[], None] | None = None
) -> list[BespokeExecutorOutput]:
    """Show progress until every job has ended; live table on a terminal, changed lines otherwise.
    ``check`` is called before every update and may raise to stop watching."""
    updates = client.watch(job_ids, interval, check)
    if console.is_terminal:
        outputs = next(updates)
        with Live(jobs_table(outputs), console=console, refresh_per_second=2) as live:
            for outputs in updates:
                live.update(jobs_table(outputs))
        return outputs
    shown: dict[str, str] = {}
    for outputs in updates:
        for output in outputs:
            line = stage_summary(output)
            if shown.get(output.id) != line:
                click.echo(line)
                shown[output.id] = line
    return outputs


def _report(
    outputs: Iterable[BespokeExecutorOutput], output_directory: Path | None, log_file: Path | None = None
) -> int:
    """Write results (if asked), print RMSE tables and error lines; return the failures."""
    from bespoke_fractal.executor.output import rmse_rows, write_job_output

    outputs = list(outputs)
    failed = 0
    for output in outputs:
        if output_directory is not None:
            target = output_directory if len(outputs) == 1 else output_directory / f"job-{output.id}"
            written = write_job_output(output, target)
            console.print(f"job {output.id}: wrote {', '.join(p.name for p in written[:3])} to {target}")
        rows = rmse_rows(output)
        if rows:
            console.print(rmse_table(output.id, rows))
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


def _combine(client: JobClient, jobs: Sequence[str | Path], output: Path) -> None:
    """Combine ``jobs`` into ``output``, print the report table and where it was written."""
    from bespoke_fractal.optimization.combine import report_path

    report = client.combine(jobs, output)
    console.print(combine_table(report))
    for action in report.actions:
        console.print(f"resolved: {action}")
    for key, why in report.removed.items():
        console.print(f"removed {key}: {why}")
    console.print(f"wrote {output} and {report_path(output).name}")


def _combine_successful(client: JobClient, outputs: Sequence[BespokeExecutorOutput], output: Path) -> None:
    """``--combined-output``: combine the jobs that succeeded; say which were left out."""
    good = [o.id for o in outputs if o.status == "success" and o.offxml is not None]
    for o in outputs:
        if o.id not in good:
            errors.print(f"combine: job {o.id} ({o.name}) left out: {o.status}")
    if not good:
        click.echo("Error: combine: no job succeeded", err=True)
        return
    _combine(client, good, output)


# -- commands ---------------------------------------------------------------------------------
@click.group("executor")
def group() -> None:
    """The bespoke executor: fragmentation and fits here, QC torsion drives on QCFractal."""


@group.command("launch")
@executor_directory_options
@launch_options
def launch(directory: Path, database_url: str | None, **options: Any) -> None:
    """Run the executor in the foreground until Ctrl-C (or SIGTERM), then stop cleanly.

    Starts the embedded server and compute managers unless they run already (or an external
    server is named), and works on every job in DIR's job store, resuming unfinished ones.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            errors.print(f"{signal.Signals(signum).name}: stopping the executor…")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    executor = _executor(directory, database_url, **options)

    def ready() -> None:
        console.print(f"executor running on {executor.directory} (Ctrl-C to stop); log: executor.log")

    executor.run_in_foreground(stop, on_ready=ready)
    console.print("executor stopped")


@group.command("submit")
@executor_directory_options
@molecule_options
@plan_option
def submit(
    directory: Path,
    database_url: str | None,
    molecules: MoleculeRequest,
    plan: bool,
) -> None:
    """Queue fits and print their job ids (a running executor on DIR picks them up).

    The QC plan goes to stderr; it checks the cache of the embedded server when that runs."""
    from bespoke_fractal.executor.service import DirectoryLock

    client = _job_client(directory, database_url)
    client.open(create=True)  # a bad database URL fails before the molecules are read
    _job_ids, failed = _submit(client, molecules, plan)
    if DirectoryLock(directory).holder() is None:
        errors.print(
            f"note: no executor is running on {directory}; the jobs wait until one does "
            f"('bespoke-fractal executor launch --directory {directory}')"
        )
    if failed:
        sys.exit(1)


@group.command("plan")
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
    directory: Path,
    database_url: str | None,
    molecules: MoleculeRequest,
    fractal_address: str | None,
    fractal_credentials: Path | None,
    n_fragmenter_workers: int,
    qc_compute_n_cores: int,
    as_json: bool,
) -> None:
    """What the fits of these molecules need from QC, and what the server already has.

    Fragments the molecules (with DIR's AM1 cache), works out every torsion drive, and asks the
    server which exist for the QC spec, submitting nothing. Exit 1 if a molecule has no drives.
    """
    from bespoke_fractal.executor import BespokeExecutor, BespokeWorkerConfig
    from bespoke_fractal.molecules import load_molecules
    from bespoke_fractal.session import fractal_connection

    executor = BespokeExecutor(  # checks the worker settings as ``launch`` would
        n_fragmenter_workers=n_fragmenter_workers,
        qc_compute_worker_config=BespokeWorkerConfig(n_cores=qc_compute_n_cores),
        directory=directory,
        fractal_server=fractal_connection(fractal_address, fractal_credentials),
        database_url=database_url,
    )
    items = [
        item for source in molecules.sources for item in load_molecules(source, molecules.enumerate_stereo)
    ]
    result = executor.client.plan(items, molecules.factory)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        print_plan(result, console)
    if any(molecule.error for molecule in result.molecules):
        sys.exit(1)


@group.command("watch")
@executor_directory_options
@click.option("--id", "job_ids", multiple=True, required=True, help="Job id (repeatable).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between updates.")
def watch(directory: Path, database_url: str | None, job_ids: tuple[str, ...], interval: float) -> None:
    """Show live stage progress until the jobs end; exit 1 if any failed."""
    from bespoke_fractal.executor.service import DirectoryLock

    client = _job_client(directory, database_url)
    for job_id in job_ids:
        client.retrieve(job_id)  # an unknown id is one error line now
    lock = DirectoryLock(directory)
    noted: list[bool] = []

    def note_idle() -> None:
        if lock.holder() is None and not noted:
            errors.print(f"note: no executor is running on {directory}; waiting for one to be launched")
            noted.append(True)

    if _report(watch_jobs(client, job_ids, interval, check=note_idle), None, directory / LOG_NAME):
        sys.exit(1)


@group.command("list")
@executor_directory_options
@click.option("--status", type=click.Choice(["waiting", "running", "success", "errored"]))
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def list_jobs(directory: Path, database_url: str | None, status: str | None, as_json: bool) -> None:
    """Every job with its status and stages."""
    import json

    outputs = _job_client(directory, database_url).list(status)
    if as_json:
        click.echo(json.dumps([o.model_dump(mode="json", exclude={"offxml"}) for o in outputs], indent=2))
        return
    console.print(jobs_table(outputs))


@group.command("retrieve")
@executor_directory_options
@click.option("--id", "job_id", required=True, help="Job id.")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for force-field.offxml, result.json, rmse.csv and plots/.",
)
@combined_output_option
def retrieve(
    directory: Path, database_url: str | None, job_id: str, output: Path, combined_output: Path | None
) -> None:
    """Write a job's force field, result, RMSE table and plots; exit 1 if it did not succeed."""
    client = _job_client(directory, database_url)
    outputs = [client.retrieve(job_id)]
    failed = _report(outputs, output, directory / LOG_NAME)
    if combined_output is not None:
        _combine_successful(client, outputs, combined_output)
    if failed:
        sys.exit(1)


@group.command("combine")
@executor_directory_options
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The combined force field (.offxml); its report goes to <stem>.combine.json beside it.",
)
@click.option("--id", "job_ids", multiple=True, help="Job id of DIR (repeatable).")
@click.option(
    "--ff",
    "force_fields",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A job's written force-field.offxml, with its result.json beside it (repeatable).",
)
def combine(
    directory: Path,
    database_url: str | None,
    output: Path,
    job_ids: tuple[str, ...],
    force_fields: tuple[Path, ...],
) -> None:
    """One force field for a series: the initial force field plus every job's bespoke torsions.

    Every molecule is labelled with it and must get its own fit's parameter on every torsion; a
    SMIRKS that captures another molecule's torsion is made more specific, torsions fitted to
    the same fragment drive share the earliest job's parameter. Nothing is written on failure."""
    if not job_ids and not force_fields:
        raise click.UsageError("give the jobs to combine with --id and/or --ff")
    client = _job_client(directory, database_url) if job_ids else _file_client(directory)
    _combine(client, [*job_ids, *force_fields], output)


@group.command("run")
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
@combined_output_option
def run(
    directory: Path,
    database_url: str | None,
    molecules: MoleculeRequest,
    plan: bool,
    output: Path,
    combined_output: Path | None,
    **options: Any,
) -> None:
    """Launch, submit, watch and retrieve in one command, then stop what was started."""
    from bespoke_fractal.executor import ExecutorError

    start = time.monotonic()
    with _executor(directory, database_url, **options) as executor:
        console.print(f"executor running on {executor.directory} ({time.monotonic() - start:.1f} s)")
        job_ids, failed = _submit(executor.client, molecules, plan)

        def alive() -> None:
            if not executor.running:
                raise ExecutorError(f"the coordinator stopped; see {executor.directory / 'executor.log'}")

        outputs = watch_jobs(executor.client, job_ids, check=alive) if job_ids else []
    failed += _report(outputs, output, directory / LOG_NAME)
    if combined_output is not None:
        _combine_successful(executor.client, outputs, combined_output)
    console.print(f"wall time {time.monotonic() - start:.1f} s")
    if failed:
        sys.exit(1)
