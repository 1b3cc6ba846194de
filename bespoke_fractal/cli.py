"""The ``bespoke-fractal`` command line: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from bespoke_fractal.cli_cache import cache
from bespoke_fractal.cli_executor import executor
from bespoke_fractal.cli_options import (
    FriendlyGroup,
    directory_option,
    factory_from_options,
    server_env_option,
    server_file_option,
    with_workflow_options,
)
from bespoke_fractal.server.accounts import USER_ROLES

console = Console()


@click.group(cls=FriendlyGroup)
@click.version_option(package_name="bespoke-fractal")
@click.option("--verbose", is_flag=True, help="Show tracebacks and every stage's notes with errors.")
def main(verbose: bool) -> None:
    """Bespoke OpenFF torsion parameters, with every QC torsion drive run, cached and
    deduplicated by QCFractal.

    The embedded server (the default) keeps everything in one directory; an external server is
    named by a credentials file or QCPORTAL_* environment variables, never by password flags.
    """
    show_library_warnings(verbose)


class _LineFormatter(logging.Formatter):
    """A warning as one line: its traceback only with --verbose."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("warning: %(message)s")
        self.tracebacks = tracebacks

    def formatException(self, ei) -> str:  # noqa: N802 - logging's name
        return super().formatException(ei) if self.tracebacks else ""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip()


def show_library_warnings(verbose: bool) -> None:
    """The package's warnings on stderr, one line each (with tracebacks under --verbose)."""
    logger = logging.getLogger("bespoke_fractal")
    if not any(getattr(h, "bespoke_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.bespoke_cli = True
        handler.setLevel(logging.WARNING)
        handler.setFormatter(_LineFormatter(verbose))
        logger.addHandler(handler)


# -- server -----------------------------------------------------------------------------------
@main.group()
def server() -> None:
    """Run the embedded QCFractal server (own PostgreSQL, 127.0.0.1, security on)."""


@server.command("start")
@directory_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="API port (default: a free port).")
def server_start(directory: Path, host: str, port: int | None) -> None:
    """Start the server, creating it on first use; records survive restarts."""
    from bespoke_fractal.server import EmbeddedServer, ServerSettings

    settings = ServerSettings(host=host, port=port) if (host != "127.0.0.1" or port) else None
    status = EmbeddedServer(directory, settings).start()
    console.print(f"QCFractal server running at {status.address} (directory {status.directory})")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"Warning: listening on {host} without TLS: passwords cross the network in clear text "
            "unless a TLS proxy or SSH tunnel carries them (docs/hpc.md). Give each person and "
            "cluster its own account: bespoke-fractal server user add NAME --role submit|compute|read"
        )


@server.command("stop")
@directory_option
def server_stop(directory: Path) -> None:
    """Stop the server and its PostgreSQL (stop local managers first)."""
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import embedded_managers

    server = EmbeddedServer(directory)
    if server.initialized:
        embedded_managers(server).stop()
    server.stop()
    console.print(f"stopped the server in {directory}")


@server.command("status")
@directory_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def server_status(directory: Path, as_json: bool) -> None:
    """Is the server running, and where."""
    from bespoke_fractal.server import EmbeddedServer

    status = EmbeddedServer(directory).status()
    if as_json:
        click.echo(status.model_dump_json(indent=2))
        return
    state = "running" if status.running else "stopped"
    console.print(
        f"server {state}; address {status.address or '-'}; PostgreSQL "
        f"{'running' if status.postgres_running else 'stopped'}; directory {status.directory}"
    )
    if not status.running:
        sys.exit(3)


@server.group("user")
def server_user() -> None:
    """Accounts on the server, one per person or cluster (an admin account is needed)."""


def _admin_connection(directory: Path, server_file: Path | None, server_env: bool):
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import external_connection

    connection = external_connection(server_file, server_env)
    return connection if connection is not None else EmbeddedServer(directory).connection("admin")


@server_user.command("add")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(USER_ROLES),
    required=True,
    help="submit: coordinators; compute: compute managers; read: qcportal users.",
)
@directory_option
@server_file_option
@server_env_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Credentials file to write (0600) [default: DIR/secrets/users/USERNAME.yaml].",
)
@click.option("--address", help="Server address to write in the file, as other machines reach it.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not generated.")
@click.option("--fullname", default="", help="Who the account is for.")
def server_user_add(
    username, role, directory, server_file, server_env, output, address, password_stdin, fullname
) -> None:
    """Create an account; its password goes to a 0600 credentials file, never to the terminal."""
    from bespoke_fractal.server.accounts import ROLE_PURPOSE, add_user

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    output = output or directory / "secrets" / "users" / f"{username}.yaml"
    admin = _admin_connection(directory, server_file, server_env)
    connection = add_user(admin, username, role, output, password, fullname, address)
    console.print(
        f"added {role} account {username!r} ({ROLE_PURPOSE[role]}) on {connection.address}; "
        f"credentials in {output}"
    )


@server_user.command("list")
@directory_option
@server_file_option
@server_env_option
def server_user_list(directory, server_file, server_env) -> None:
    """The server's accounts and their roles."""
    from bespoke_fractal.server.accounts import list_users

    table = Table("username", "role", "enabled", "fullname")
    for account in list_users(_admin_connection(directory, server_file, server_env)):
        table.add_row(account.username, account.role, str(account.enabled), account.fullname)
    console.print(table)


# -- managers ---------------------------------------------------------------------------------
@main.group()
def manager() -> None:
    """Run QCFractal compute managers (qcfractal-compute-manager) on this machine."""


def _managers(directory: Path, server_file: Path | None, server_env: bool, settings=None):
    from bespoke_fractal.manager import LocalManagers
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import embedded_managers, external_connection

    connection = external_connection(server_file, server_env)
    if connection is None:
        return embedded_managers(EmbeddedServer(directory), settings)
    return LocalManagers(directory / "managers", connection, settings)


@manager.command("start")
@directory_option
@server_file_option
@server_env_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Run one manager from a scheduler config (manager_configs/slurm.yaml, ...) in the "
    "background; its account is the config's own unless --server-file, --server-env or "
    "--directory (the embedded server's compute account) is given.",
)
@click.option(
    "--n-workers",
    type=int,
    default=1,
    show_default=True,
    help="QC calculations run at once (one manager process each).",
)
@click.option(
    "--cores-per-worker",
    type=int,
    default=1,
    show_default=True,
    help="Cores of each calculation; workers are pinned to their own cores.",
)
@click.option(
    "--memory-per-worker",
    type=float,
    default=2.0,
    show_default=True,
    help="Memory of each calculation in GiB (passed to qcengine).",
)
@click.option(
    "--compute-tag",
    "compute_tags",
    multiple=True,
    default=("*",),
    show_default=True,
    help="Only take tasks with these compute tags.",
)
@click.pass_context
def manager_start(
    ctx,
    directory,
    server_file,
    server_env,
    config_file,
    n_workers,
    cores_per_worker,
    memory_per_worker,
    compute_tags,
) -> None:
    """Start compute managers for the embedded server (or an external one)."""
    from bespoke_fractal.manager import ManagerSettings

    if config_file is not None:
        status = _cluster_manager(ctx, directory, server_file, server_env, config_file).start()
        console.print(
            f"manager {status.name} from {status.config_file}: pid {status.pid}, log {status.log_file}"
        )
        return
    settings = ManagerSettings(
        n_workers=n_workers,
        cores_per_worker=cores_per_worker,
        memory_per_worker=memory_per_worker,
        compute_tags=list(compute_tags),
    )
    processes = _managers(directory, server_file, server_env, settings).start()
    for p in processes:
        console.print(f"manager {p.index}: pid {p.pid}, cores {p.cores or 'any'}, log {p.log_file}")


def _cluster_manager(ctx: click.Context, directory: Path, server_file, server_env, config_file: Path):
    """The manager of ``config_file``; its account is the config's unless one is named."""
    from bespoke_fractal.manager.cluster import ClusterManager
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import external_connection

    connection = external_connection(server_file, server_env)
    explicit_directory = ctx.get_parameter_source("directory") is not click.core.ParameterSource.DEFAULT
    if connection is None and explicit_directory:
        connection = EmbeddedServer(directory).connection("compute")
    return ClusterManager(config_file, directory / "cluster-managers", connection)


@manager.command("stop")
@directory_option
@server_file_option
@server_env_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Stop the manager started from this config.",
)
def manager_stop(directory, server_file, server_env, config_file) -> None:
    """Stop the managers; their unfinished tasks go back to the server."""
    if config_file is not None:
        from bespoke_fractal.manager.cluster import ClusterManager

        stopped = ClusterManager(config_file, directory / "cluster-managers", None).stop()
        console.print(f"stopped {int(stopped)} manager process(es)")
        return
    stopped = _managers(directory, server_file, server_env).stop()
    console.print(f"stopped {stopped} manager process(es)")


@manager.command("status")
@directory_option
@server_file_option
@server_env_option
def manager_status(directory, server_file, server_env) -> None:
    """List the local manager processes and those started from configs."""
    from bespoke_fractal.manager.cluster import started_managers

    table = Table("manager", "pid", "running", "cores", "log")
    for p in _managers(directory, server_file, server_env).status():
        table.add_row(str(p.index), str(p.pid or "-"), str(p.running), str(p.cores), p.log_file)
    for state in started_managers(directory / "cluster-managers"):
        table.add_row(state.name, str(state.pid or "-"), str(state.running), "batch jobs", state.log_file)
    console.print(table)


# -- QC stage ---------------------------------------------------------------------------------
@main.group()
def qc() -> None:
    """The QC stage: torsion drives on QCFractal, cached and deduplicated."""


@qc.command("presets")
def qc_presets() -> None:
    """List the QC specification presets."""
    from bespoke_fractal.qc import list_presets

    table = Table("preset", "aliases", "program", "method", "basis", "grid", "description")
    for spec in list_presets():
        table.add_row(
            spec.name,
            ", ".join(spec.aliases),
            spec.program,
            spec.method,
            spec.basis or "-",
            str(spec.grid_spacing),
            spec.description,
        )
    console.print(table)


@qc.command("check")
@click.option("--preset", "presets", multiple=True, help="QC preset to check (repeatable; default: all).")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds to wait per preset.")
@click.option(
    "--n-workers",
    type=int,
    default=1,
    show_default=True,
    help="Compute managers started for the embedded server if none run.",
)
@directory_option
@server_file_option
@server_env_option
def qc_check(presets, timeout, n_workers, directory, server_file, server_env) -> None:
    """Run one tiny gradient per QC preset through the connected managers and print how it went."""
    from bespoke_fractal.qc import get_preset, list_presets
    from bespoke_fractal.qc.availability import active_managers
    from bespoke_fractal.qc.check import check_spec

    specs = [get_preset(name) for name in presets] if presets else list_presets()
    client = _connection(directory, server_file, server_env, n_workers).client()
    managers = active_managers(client, wait=30.0)
    columns = ("preset", "program", "version", "method / basis", "seconds", "energy / Eh", "result")
    table = Table(*columns, title="QC check: one gradient of water per preset")
    failed = 0
    for spec in specs:
        result = check_spec(client, spec, timeout=timeout, managers=managers)
        failed += not result.ok
        table.add_row(
            result.preset,
            result.program,
            result.version or "-",
            f"{result.method} / {result.basis or '-'}",
            f"{result.seconds:.2f}" if result.seconds is not None else "-",
            f"{result.energy_hartree:.8f}" if result.energy_hartree is not None else "-",
            "OK" if result.ok else result.error,
        )
    console.print(table)
    if failed:
        sys.exit(1)


def _connection(directory: Path, server_file, server_env, n_workers: int):
    from bespoke_fractal.manager import ManagerSettings
    from bespoke_fractal.session import ensure_embedded, external_connection

    connection = external_connection(server_file, server_env)
    if connection is None:
        connection = ensure_embedded(directory, ManagerSettings(n_workers=n_workers))
    return connection


def _print_results(results, as_json: bool) -> int:
    """Print profiles (or JSON) and one error line per failed drive; return the failures."""
    from bespoke_fractal.qc.report import profile_table

    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
    for result in results:
        if as_json:
            continue
        if result.grid:
            console.print(profile_table(result))
        if result.energy_note:
            console.print(f"note: {result.energy_note}")
    failed = [r for r in results if not r.ok]
    for result in failed:
        click.echo(f"Error: torsion drive {result.record_id} failed: {result.error}", err=True)
    return len(failed)


def _parse_indices(text: str, count: int) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace("-", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"'{text}' is not {count} comma-separated atom indices") from None
    if len(values) != count:
        raise click.BadParameter(f"'{text}' must have {count} atom indices")
    return values


@qc.command("drive")
@click.option("--smiles", required=True, help="Molecule as SMILES (atom indices follow its order, H last).")
@click.option("--dihedral", "dihedrals", multiple=True, help="Four atom indices, e.g. 0,1,2,3.")
@click.option("--bond", "bonds", multiple=True, help="Two atom indices of a rotatable bond, e.g. 1,2.")
@click.option("--preset", default="xtb-gfn2", show_default=True, help="QC specification preset.")
@click.option("--grid-spacing", type=int, default=None, help="Override the preset's grid (degrees).")
@click.option("--n-conformers", type=int, default=None, help="Override starting conformers.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after this many seconds.")
@click.option(
    "--n-workers",
    type=int,
    default=2,
    show_default=True,
    help="Compute managers started for the embedded server if none run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@directory_option
@server_file_option
@server_env_option
def qc_drive(
    smiles,
    dihedrals,
    bonds,
    preset,
    grid_spacing,
    n_conformers,
    timeout,
    n_workers,
    as_json,
    directory,
    server_file,
    server_env,
) -> None:
    """Drive torsions of one molecule and print their QC profiles (cached drives are reused)."""
    from openff.toolkit import Molecule

    from bespoke_fractal.qc import TorsionDriveStage, default_dihedral, get_preset

    try:
        molecule = Molecule.from_smiles(smiles, allow_undefined_stereo=False)
    except Exception as exc:  # the toolkit raises many types for bad SMILES
        raise click.ClickException(f"cannot read SMILES '{smiles}': {str(exc).splitlines()[0]}") from None
    targets = [_parse_indices(d, 4) for d in dihedrals]
    targets += [default_dihedral(molecule, _parse_indices(b, 2)) for b in bonds]
    if not targets:
        raise click.UsageError("name at least one --dihedral or --bond")
    changes = {k: v for k, v in (("grid_spacing", grid_spacing), ("n_conformers", n_conformers)) if v}
    spec = get_preset(preset, **changes)
    connection = _connection(directory, server_file, server_env, n_workers)
    results = TorsionDriveStage(connection.client()).run(molecule, targets, spec, timeout=timeout)
    if _print_results(results, as_json):
        sys.exit(1)


@qc.command("demo")
@click.option("--preset", default="xtb-gfn2", show_default=True, help="QC specification preset.")
@click.option("--grid-spacing", type=int, default=30, show_default=True, help="Grid (degrees).")
@click.option("--n-workers", type=int, default=2, show_default=True, help="Compute managers.")
@click.option("--stop-after", is_flag=True, help="Stop the server and managers when done.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait.")
@directory_option
def qc_demo(preset, grid_spacing, n_workers, stop_after, timeout, directory) -> None:
    """Drive the aryl-N torsion of paracetamol on the embedded server and print the profile.

    The first run computes it; later runs find the cached record and finish in seconds.
    """
    from bespoke_fractal.qc import get_preset
    from bespoke_fractal.qc.demo import run_demo

    start = time.monotonic()
    connection = _connection(directory, None, False, n_workers)
    console.print(f"embedded QCFractal server at {connection.address} ({time.monotonic() - start:.1f} s)")
    result = run_demo(connection, get_preset(preset, grid_spacing=grid_spacing), timeout=timeout)
    failed = _print_results([result], as_json=False)
    console.print(f"wall time {time.monotonic() - start:.1f} s")
    if stop_after:
        from bespoke_fractal.server import EmbeddedServer
        from bespoke_fractal.session import embedded_managers

        server = EmbeddedServer(directory)
        embedded_managers(server).stop()
        server.stop()
    else:
        console.print(
            f"server and managers keep running: stop them with "
            f"'bespoke-fractal server stop --directory {directory}'"
        )
    if failed:
        sys.exit(1)


# ---- workflow and fragmentation -------------------------------------------------------


@main.group()
def workflow() -> None:
    """Workflows: force field, target torsions, fragmenter, QC and optimiser settings."""


@workflow.command("presets")
def workflow_presets() -> None:
    """List the workflow presets."""
    from bespoke_fractal.workflow import BespokeWorkflowFactory, list_workflow_presets

    table = Table("preset", "QC", "grid", "conformers", "fragmenter", "description")
    for name, description in list_workflow_presets().items():
        factory = BespokeWorkflowFactory.from_preset(name)
        spec = factory.qc_spec
        table.add_row(
            name,
            spec.label,
            f"{spec.grid_spacing}°",
            str(spec.n_conformers),
            factory.fragmentation_engine.type,
            description,
        )
    console.print(table)


@workflow.command("show")
@with_workflow_options
def workflow_show(preset, workflow_file, changes) -> None:
    """Print a workflow as YAML."""
    import yaml

    factory = factory_from_options(preset, workflow_file, changes)
    click.echo(yaml.safe_dump(factory.model_dump(mode="json"), sort_keys=False), nl=False)


@workflow.command("save")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@with_workflow_options
def workflow_save(output, preset, workflow_file, changes) -> None:
    """Save a workflow to OUTPUT (.yaml, .yml or .json) to edit or reuse."""
    factory = factory_from_options(preset, workflow_file, changes)
    factory.to_file(output)
    console.print(f"saved workflow to {output}")


@main.command("fragment")
@click.option("--smiles", "smiles", multiple=True, help="A molecule as SMILES (repeatable).")
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="SDF or MOL2 file, one or many molecules (repeatable).",
)
@with_workflow_options
@click.option("--enumerate-stereo", is_flag=True, help="Fit every stereoisomer of undefined centres.")
@click.option("--n-workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.option(
    "--cache-directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bespoke-executor") / "am1-cache",
    show_default=True,
    help="Where AM1 bond orders are kept for reuse.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job descriptions as JSON.")
def fragment(
    smiles, files, preset, workflow_file, changes, enumerate_stereo, n_workers, cache_directory, as_json
):
    """Fragment molecules and show which torsion of which fragment each target bond is driven on.

    Nothing is computed on a QC server; this is the first stage of 'executor submit'.
    """
    from bespoke_fractal.workflow import build_schemas, unique_drives

    if not smiles and not files:
        raise click.UsageError("give at least one --smiles or --file")
    factory = factory_from_options(preset, workflow_file, changes)
    outcomes = build_schemas(
        factory, [*smiles, *files], n_workers, cache_directory, enumerate_stereo=enumerate_stereo
    )
    good = [o.schema_ for o in outcomes if o.ok]
    if as_json:
        click.echo(json.dumps([o.model_dump(mode="json", by_alias=True) for o in outcomes], indent=2))
    else:
        table = Table("molecule", "fragments", "target bonds", "drives", "AM1 run/reused", "seconds")
        for outcome in outcomes:
            if not outcome.ok:
                continue
            fragmented = outcome.schema_.fragmentation
            table.add_row(
                outcome.name,
                str(len(fragmented.fragments)),
                str(sum(len(t.parent_bonds) for t in fragmented.targets)),
                str(len(fragmented.unique_identities)),
                f"{fragmented.am1_computed}/{fragmented.am1_reused}",
                f"{outcome.seconds:.1f}",
            )
        console.print(table)
        console.print(f"{len(unique_drives(good))} distinct torsion drives for {len(good)} molecule(s)")
    for outcome in outcomes:
        if not outcome.ok:
            prefix = "" if outcome.error.startswith(outcome.name) else f"{outcome.name}: "
            click.echo(f"Error: {prefix}{outcome.error}", err=True)
    if len(good) < len(outcomes):
        sys.exit(1)


main.add_command(executor)
main.add_command(cache)
