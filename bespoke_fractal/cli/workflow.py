"""``bespoke-fractal workflow ...``: list, show and save workflows."""

from __future__ import annotations

from pathlib import Path

import click

from bespoke_fractal.cli.options import factory_from_options, with_workflow_options
from bespoke_fractal.cli.tables import console, workflow_presets_table


@click.group("workflow")
def group() -> None:
    """Workflows: force field, target torsions, fragmenter, QC and optimiser settings."""


@group.command("presets")
def presets() -> None:
    """List the workflow presets."""
    from bespoke_fractal.workflow import list_workflow_presets

    console.print(workflow_presets_table(list_workflow_presets()))


@group.command("show")
@with_workflow_options
def show(preset: str | None, workflow_file: Path | None, changes: tuple[str, ...]) -> None:
    """Print a workflow as YAML."""
    import yaml

    factory = factory_from_options(preset, workflow_file, changes)
    click.echo(yaml.safe_dump(factory.model_dump(mode="json"), sort_keys=False), nl=False)


@group.command("save")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@with_workflow_options
def save(output: Path, preset: str | None, workflow_file: Path | None, changes: tuple[str, ...]) -> None:
    """Save a workflow to OUTPUT (.yaml, .yml or .json) to edit or reuse."""
    factory = factory_from_options(preset, workflow_file, changes)
    factory.to_file(output)
    console.print(f"saved workflow to {output}")
