"""``bespoke-fractal qc ...``: the QC stage on its own (presets, checks, single drives, demo)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bespoke_fractal.cli.options import directory_option, server_env_option, server_file_option
from bespoke_fractal.cli.tables import console, qc_check_table, qc_presets_table

if TYPE_CHECKING:
    from bespoke_fractal.schema.drives import TorsionDriveResult
    from bespoke_fractal.server import ServerConnection


@click.group("qc")
def group() -> None:
    """The QC stage: torsion drives on QCFractal, cached and deduplicated."""


def _connection(
    directory: Path, server_file: Path | None, server_env: bool, n_workers: int
) -> ServerConnection:
    """The external server, else the embedded one (started with ``n_workers`` managers if needed)."""
    from bespoke_fractal.manager import ManagerSettings
    from bespoke_fractal.session import ensure_embedded, external_connection

    connection = external_connection(server_file, server_env)
    if connection is None:
        connection = ensure_embedded(directory, ManagerSettings(n_workers=n_workers))
    return connection


def _print_results(results: Sequence[TorsionDriveResult], as_json: bool) -> int:
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


@group.command("presets")
def presets() -> None:
    """List the QC specification presets."""
    from bespoke_fractal.qc import list_presets

    console.print(qc_presets_table(list_presets()))


@group.command("check")
@click.option("--preset", "presets", multiple=True, help="QC preset to check (repeatable; default: all).")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds to wait per preset.")
@click.option(
    "--n-workers",
    type=int,
    default=1,
    show_default=True,
    help="Compute managers started for the embedded server if none run.",
)
@directory_option()
@server_file_option
@server_env_option
def check(
    presets: tuple[str, ...],
    timeout: float,
    n_workers: int,
    directory: Path,
    server_file: Path | None,
    server_env: bool,
) -> None:
    """Run one tiny gradient per QC preset through the connected managers and print how it went."""
    from bespoke_fractal.qc import get_preset, list_presets
    from bespoke_fractal.qc.availability import active_managers
    from bespoke_fractal.qc.check import check_spec

    specs = [get_preset(name) for name in presets] if presets else list_presets()
    client = _connection(directory, server_file, server_env, n_workers).client()
    managers = active_managers(client, wait=30.0)
    results = [check_spec(client, spec, timeout=timeout, managers=managers) for spec in specs]
    console.print(qc_check_table(results))
    if any(not result.ok for result in results):
        sys.exit(1)


@group.command("drive")
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
@directory_option()
@server_file_option
@server_env_option
def drive(
    smiles: str,
    dihedrals: tuple[str, ...],
    bonds: tuple[str, ...],
    preset: str,
    grid_spacing: int | None,
    n_conformers: int | None,
    timeout: float | None,
    n_workers: int,
    as_json: bool,
    directory: Path,
    server_file: Path | None,
    server_env: bool,
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


@group.command("demo")
@click.option("--preset", default="xtb-gfn2", show_default=True, help="QC specification preset.")
@click.option("--grid-spacing", type=int, default=30, show_default=True, help="Grid (degrees).")
@click.option("--n-workers", type=int, default=2, show_default=True, help="Compute managers.")
@click.option("--stop-after", is_flag=True, help="Stop the server and managers when done.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait.")
@directory_option()
def demo(
    preset: str, grid_spacing: int, n_workers: int, stop_after: bool, timeout: float, directory: Path
) -> None:
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
