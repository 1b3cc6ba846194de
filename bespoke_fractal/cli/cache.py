"""``bespoke-fractal cache import|export``: carry completed torsion drives between servers and files."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bespoke_fractal.cli.options import directory_option, fractal_options, with_options

if TYPE_CHECKING:
    from bespoke_fractal.schema.qc import QCSpec
    from bespoke_fractal.server import ServerConnection

DESTINATION_OPTIONS = [
    directory_option(
        "Executor directory whose embedded server is used (started for the command if stopped)."
    ),
    *fractal_options(
        "URL of an external QCFractal server instead of the embedded one.",
        "YAML file with username and password (and address) for that server; chmod 600.",
    ),
]
SELECTION_OPTIONS = [
    click.option("--dataset", "datasets", multiple=True, help="Torsiondrive dataset name (repeatable)."),
    click.option(
        "--record-ids", "record_ids", multiple=True, help="Torsiondrive record ids, e.g. 12,15 (repeatable)."
    ),
]


@click.group("cache")
def group() -> None:
    """Import completed torsion drives from another server or a file, so fits find them and do
    not recompute them; export them to a file (docs/cache.md)."""


def _ids(values: Sequence[str]) -> list[int]:
    ids = []
    for value in values:
        for part in value.replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError:
                raise click.BadParameter(f"'{part}' is not a record id", param_hint="--record-ids") from None
    return ids


def _spec_choice(preset: str | None, grid_spacing: int | None) -> QCSpec | str | None:
    from bespoke_fractal.schema.qc import get_preset

    if grid_spacing is not None and not preset:
        raise click.UsageError("--grid-spacing needs --preset")
    if preset:
        spec = get_preset(preset, grid_spacing=grid_spacing) if grid_spacing else get_preset(preset)
        return spec if grid_spacing else spec.name
    return None


@contextlib.contextmanager
def _destination(
    directory: Path, address: str | None, credentials: Path | None, compute_credentials: Path | None = None
) -> Iterator[tuple[ServerConnection, ServerConnection, str]]:
    """(submit connection, compute connection, label); an embedded server stopped before is
    started for the command and stopped after it."""
    from bespoke_fractal.server import EmbeddedServer, ServerConnection
    from bespoke_fractal.session import fractal_connection, temporary_server

    external = fractal_connection(address, credentials)
    if external is not None:
        compute = external
        if compute_credentials:
            compute = ServerConnection.from_file(compute_credentials, address=external.address)
        yield external, compute, external.address
        return
    if compute_credentials:
        raise click.UsageError("--compute-credentials is for an external server (--fractal-address)")
    if not EmbeddedServer(directory).initialized:
        raise click.UsageError(
            f"{directory} holds no embedded server (start one with 'bespoke-fractal server start')"
        )
    with temporary_server(directory) as server:
        yield server.connection("submit"), server.connection("compute"), f"{server.address} ({directory})"


@group.command("export")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Archive to write: .json, .json.gz or .json.bz2.",
)
@with_options(SELECTION_OPTIONS)
@click.option(
    "--preset", help="Export every drive of this QC preset (any grid spacing unless --grid-spacing)."
)
@click.option("--grid-spacing", type=int, help="With --preset: only drives at this grid spacing.")
@click.option("--no-gradients", is_flag=True, help="Leave out the final gradient of each optimisation.")
@with_options(DESTINATION_OPTIONS)
def export(
    path: Path,
    datasets: tuple[str, ...],
    record_ids: tuple[str, ...],
    preset: str | None,
    grid_spacing: int | None,
    no_gradients: bool,
    directory: Path,
    fractal_address: str | None,
    fractal_credentials: Path | None,
) -> None:
    """Write completed torsion drives of the executor's server to a file."""
    from bespoke_fractal.cache import SourceSelection, read_server_drives, write_archive
    from bespoke_fractal.cache.source import preset_datasets

    ids = _ids(record_ids)
    if not (datasets or ids or preset):
        raise click.UsageError("give --dataset, --record-ids or --preset")
    if grid_spacing is not None and not preset:
        raise click.UsageError("--grid-spacing needs --preset")
    with _destination(directory, fractal_address, fractal_credentials) as (connection, _compute, label):
        client = connection.client()
        names = list(datasets)
        if preset:
            found = preset_datasets(client, preset, grid_spacing)
            if not found and not names and not ids:
                raise click.ClickException(f"no drives of preset {preset} on {label}")
            names += found
        archive, refused = read_server_drives(
            client,
            SourceSelection(datasets=names, record_ids=ids),
            connection.address,
            gradients=not no_gradients,
        )
    for item in refused:
        click.echo(f"skipped record {item.source_record_id}: {item.reason}", err=True)
    if not archive.drives:
        raise click.ClickException("no complete drive to export")
    write_archive(archive, path)
    n_opt = sum(len(d.optimizations) for d in archive.drives)
    click.echo(f"wrote {len(archive.drives)} drive(s), {n_opt} optimisations, to {path}")


@group.command("import")
@click.option("--from", "source_address", help="Address of the QCFractal server to import from.")
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML file with username and password for the source (chmod 600); default: anonymous.",
)
@with_options(SELECTION_OPTIONS)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Archive written by 'cache export' (.json, .json.gz, .json.bz2) instead of --from.",
)
@click.option("--preset", help="QC preset the drives must match (default: the preset whose spec matches).")
@click.option(
    "--grid-spacing", type=int, help="With --preset: the grid spacing they must have (default: theirs)."
)
@click.option(
    "--timeout",
    type=float,
    default=300,
    show_default=True,
    help="Give up when the replay makes no progress for this many seconds.",
)
@with_options(DESTINATION_OPTIONS)
@click.option(
    "--compute-credentials",
    type=click.Path(dir_okay=False, path_type=Path),
    help="External destination: a compute account's credentials file for the replay "
    "(default: --fractal-credentials, which then needs the admin role).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def import_(
    source_address: str | None,
    credentials: Path | None,
    datasets: tuple[str, ...],
    record_ids: tuple[str, ...],
    path: Path | None,
    preset: str | None,
    grid_spacing: int | None,
    timeout: float,
    directory: Path,
    fractal_address: str | None,
    fractal_credentials: Path | None,
    compute_credentials: Path | None,
    as_json: bool,
) -> None:
    """Bring completed torsion drives from a server or a file to the executor's server, so later
    fits find them by their torsion identity instead of recomputing them."""
    from bespoke_fractal.cache import (
        CacheError,
        SourceSelection,
        import_drives,
        read_archive,
        read_server_drives,
    )
    from bespoke_fractal.server import ServerConnection

    ids = _ids(record_ids)
    if bool(source_address) == bool(path):
        raise click.UsageError("give either --from ADDRESS or --file FILE")
    if source_address and not (datasets or ids):
        raise click.UsageError("with --from, give --dataset or --record-ids")
    if path and (datasets or ids or credentials):
        raise click.UsageError("--dataset, --record-ids and --credentials go with --from, not --file")
    choice = _spec_choice(preset, grid_spacing)
    if path:
        archive, refused = read_archive(path), []
    else:
        if credentials:
            source = ServerConnection.from_file(credentials, address=source_address)
        else:
            source = ServerConnection(address=source_address)
        archive, refused = read_server_drives(
            source.client(), SourceSelection(datasets=list(datasets), record_ids=ids), source.address
        )
    with _destination(directory, fractal_address, fractal_credentials, compute_credentials) as (
        connection,
        compute,
        label,
    ):
        try:
            report = import_drives(
                archive,
                connection,
                compute,
                choice,
                refused=refused,
                stall_timeout=timeout,
                on_note=lambda text: click.echo(text, err=True),
            )
        except CacheError as exc:
            hint = ""
            if "stop the compute managers" in str(exc) and not fractal_address and not fractal_credentials:
                hint = f" (bespoke-fractal manager stop --directory {directory})"
            raise click.ClickException(f"{exc}{hint}") from None
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    for item in report.refused:
        click.echo(f"Error: refused {item.source} record {item.source_record_id}: {item.reason}", err=True)
    for item in report.failed:
        click.echo(
            f"Error: {item.source} record {item.source_record_id} (here record {item.record_id}) did not "
            f"complete: {item.error}",
            err=True,
        )
    if not as_json:
        click.echo(f"{label}: {report.summary()}")
    if not report.ok:
        sys.exit(1)
