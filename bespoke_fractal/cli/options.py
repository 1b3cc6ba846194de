"""Options and error handling shared by the ``bespoke-fractal`` command groups; each shared option
is defined here once."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from bespoke_fractal.errors import BespokeFractalError, first_line, validation_line

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

DEFAULT_DIRECTORY = Path("bespoke-executor")
SERVER_DIRECTORY_HELP = "Directory of the embedded server: its database, logs, credentials and managers."


# -- errors -----------------------------------------------------------------------------------
def one_line(exc: Exception) -> str:
    """The first meaningful line of an exception (a pydantic validation error's first field and
    message), for an ``Error:`` message."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return validation_line(exc)
    if isinstance(exc, KeyError) and exc.args:  # str(KeyError) would quote the message
        message = Exception(exc.args[0])
        return first_line(message) if str(message).strip() else type(exc).__name__
    return first_line(exc)


class FriendlyGroup(click.Group):
    """Turns this project's errors and bad input into one ``Error:`` line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
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


def with_options(options: Sequence[Decorator]) -> Decorator:
    """A decorator that adds click ``options`` in the order given."""

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


# -- which server -----------------------------------------------------------------------------
def directory_option(help: str = SERVER_DIRECTORY_HELP) -> Decorator:
    """``--directory`` (default ``bespoke-executor``), described for the command group."""
    return click.option(
        "--directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_DIRECTORY,
        show_default=True,
        help=help,
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


def fractal_options(address_help: str, credentials_help: str) -> list[Decorator]:
    """``--fractal-address`` and ``--fractal-credentials``: an external server instead of the
    embedded one."""
    return [
        click.option("--fractal-address", help=address_help),
        click.option(
            "--fractal-credentials", type=click.Path(dir_okay=False, path_type=Path), help=credentials_help
        ),
    ]


# -- molecules --------------------------------------------------------------------------------
def smiles_option(help: str) -> Decorator:
    """``--smiles`` (repeatable)."""
    return click.option("--smiles", "smiles", multiple=True, help=help)


def file_option(help: str) -> Decorator:
    """``--file`` (repeatable, must exist), given to the command as ``files``."""
    return click.option(
        "--file",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help=help,
    )


def enumerate_stereo_option(help: str) -> Decorator:
    """``--enumerate-stereo``."""
    return click.option("--enumerate-stereo", is_flag=True, help=help)


def require_molecules(smiles: Sequence[str], files: Sequence[Path]) -> None:
    """A usage error unless at least one molecule is given."""
    if not smiles and not files:
        raise click.UsageError("give at least one --smiles or --file")


# -- workflows --------------------------------------------------------------------------------
WORKFLOW_SUFFIXES = {".yaml", ".yml", ".json"}

workflow_options = [
    click.option(
        "--workflow",
        "preset",
        help="Workflow preset (default, xtb or debug; default: default) or a workflow file.",
    ),
    click.option(
        "--workflow-file",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="Workflow saved with 'workflow save', or an openff-bespokefit workflow file (YAML or JSON).",
    ),
    click.option(
        "--set",
        "changes",
        multiple=True,
        metavar="FIELD=VALUE",
        help="Change one workflow field, e.g. --set qc_spec.grid_spacing=30 (repeatable).",
    ),
]


def with_workflow_options(function: F) -> F:
    """Adds ``--workflow``, ``--workflow-file`` and ``--set``."""
    return with_options(workflow_options)(function)


def _parse_changes(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set a.b=value`` pairs; values are read as YAML (30 -> int, true -> bool)."""
    import yaml

    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{pair}' is not FIELD=VALUE", param_hint="--set")
        changes[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return changes


def factory_from_options(preset: str | None, workflow_file: Path | None, changes: Sequence[str]) -> Any:
    """The workflow factory named by ``--workflow``/``--workflow-file`` with the ``--set`` changes."""
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
