"""``bespoke-fractal fragment``: fragment molecules and show the drives their fits need."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bespoke_fractal.cli.options import (
    DEFAULT_DIRECTORY,
    enumerate_stereo_option,
    factory_from_options,
    file_option,
    require_molecules,
    smiles_option,
    with_workflow_options,
)
from bespoke_fractal.cli.tables import console, fragment_table


@click.command("fragment")
@smiles_option("A molecule as SMILES (repeatable).")
@file_option("SDF or MOL2 file, one or many molecules (repeatable).")
@with_workflow_options
@enumerate_stereo_option("Fit every stereoisomer of undefined centres.")
@click.option("--n-workers", type=int, default=1, show_default=True, help="Worker processes.")
@click.option(
    "--cache-directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIRECTORY / "am1-cache",
    show_default=True,
    help="Where AM1 bond orders are kept for reuse.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job descriptions as JSON.")
def command(
    smiles: tuple[str, ...],
    files: tuple[Path, ...],
    preset: str | None,
    workflow_file: Path | None,
    changes: tuple[str, ...],
    enumerate_stereo: bool,
    n_workers: int,
    cache_directory: Path,
    as_json: bool,
) -> None:
    """Fragment molecules and show which torsion of which fragment each target bond is driven on.

    Nothing is computed on a QC server; this is the first stage of 'executor submit'.
    """
    from bespoke_fractal.workflow import build_schemas, unique_drives

    require_molecules(smiles, files)
    factory = factory_from_options(preset, workflow_file, changes)
    outcomes = build_schemas(
        factory, [*smiles, *files], n_workers, cache_directory, enumerate_stereo=enumerate_stereo
    )
    good = [o.schema_ for o in outcomes if o.ok]
    if as_json:
        click.echo(json.dumps([o.model_dump(mode="json", by_alias=True) for o in outcomes], indent=2))
    else:
        console.print(fragment_table(outcomes))
        console.print(f"{len(unique_drives(good))} distinct torsion drives for {len(good)} molecule(s)")
    for outcome in outcomes:
        if not outcome.ok:
            prefix = "" if outcome.error.startswith(outcome.name) else f"{outcome.name}: "
            click.echo(f"Error: {prefix}{outcome.error}", err=True)
    if len(good) < len(outcomes):
        sys.exit(1)
