"""Options and error handling shared by every ``bespoke-fractal`` command group."""

from __future__ import annotations

import traceback
from pathlib import Path

import click

from bespoke_fractal.errors import BespokeFractalError


def one_line(exc: Exception) -> str:
    """The first meaningful line of an exception, for an ``Error:`` message."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        text = error["msg"].removeprefix("Value error, ")
        return f"{where}: {text}" if where else text
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = str(message).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class FriendlyGroup(click.Group):
    """Turns this project's errors and bad input into one ``Error:`` line and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (BespokeFractalError, ValueError, KeyError) as exc:
            if verbose(ctx):
                traceback.print_exc()
            raise click.ClickException(one_line(exc)) from None


def verbose(ctx: click.Context | None = None) -> bool:
    """Whether ``bespoke-fractal --verbose`` was given."""
    ctx = ctx or click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and (root.params.get("verbose") or (root.obj or {}).get("verbose")))


directory_option = click.option(
    "--directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("bespoke-executor"),
    show_default=True,
    help="Directory of the embedded server: its database, logs, credentials and managers.",
)
server_file_option = click.option(
    "--server-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Use an external QCFractal server: YAML file with address, username, password (chmod 600).",
)
server_env_option = click.option(
    "--server-env",
    is_flag=True,
    help="Use an external server from QCPORTAL_ADDRESS / QCPORTAL_USERNAME / QCPORTAL_PASSWORD.",
)


def _parse_changes(pairs: tuple[str, ...]) -> dict:
    """``--set a.b=value`` pairs; values are read as YAML (30 -> int, true -> bool)."""
    import yaml

    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{pair}' is not FIELD=VALUE", param_hint="--set")
        changes[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return changes


WORKFLOW_SUFFIXES = {".yaml", ".yml", ".json"}


def factory_from_options(preset: str | None, workflow_file: Path | None, changes: tuple[str, ...]):
    from bespoke_fractal.workflow import BespokeWorkflowFactory

    if preset and workflow_file:
        raise click.UsageError("give --workflow or --workflow-file, not both")
    if preset and (Path(preset).suffix.lower() in WORKFLOW_SUFFIXES or Path(preset).is_file()):
        preset, workflow_file = None, Path(preset)  # --workflow names a file
    if workflow_file:
        factory = BespokeWorkflowFactory.from_file(workflow_file)
    else:
        factory = BespokeWorkflowFactory.from_preset(preset or "default")
    return factory.with_changes(_parse_changes(changes))


workflow_options = [
    click.option(
        "--workflow",
        "preset",
        help="Workflow preset (default, xtb or debug; default: default) or a workflow file.",
    ),
    click.option(
        "--workflow-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Workflow saved with 'workflow save' (YAML or JSON).",
    ),
    click.option(
        "--set",
        "changes",
        multiple=True,
        metavar="FIELD=VALUE",
        help="Change one workflow field, e.g. --set qc_spec.grid_spacing=30 (repeatable).",
    ),
]


def with_options(options: list):
    """A decorator that adds click ``options`` in the order given."""

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def with_workflow_options(function):
    return with_options(workflow_options)(function)
