"""The ``bespoke-fractal`` command line: a thin layer over the Python API.

One module per command group (``server``, ``manager``, ``qc``, ``workflow``, ``executor``,
``cache``) and the ``fragment`` command; shared options in :mod:`.options`, tables in :mod:`.tables`.
"""

from __future__ import annotations

import logging
from types import TracebackType

import click

from bespoke_fractal.cli import cache, executor, fragment, manager, qc, server, workflow
from bespoke_fractal.cli.options import FriendlyGroup

__all__ = ["main"]


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

    def formatException(  # noqa: N802 - logging's name
        self, ei: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
    ) -> str:
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


for _command in (
    server.group,
    manager.group,
    qc.group,
    workflow.group,
    fragment.command,
    executor.group,
    cache.group,
):
    main.add_command(_command)
