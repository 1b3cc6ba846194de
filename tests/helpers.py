"""Helpers shared by the test modules: the command line as a user runs it, and server queries.

Test modules import this as ``helpers`` (pytest puts ``tests/`` on ``sys.path``, as for
``qc_tasks``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the console script installed beside this interpreter, as a user runs it
EXE = str(Path(sys.executable).parent / "bespoke-fractal")
# run_cli(env=WIDE): rich tables and error lines as wide as they need, unwrapped
WIDE = {"COLUMNS": "200"}


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """``bespoke-fractal ARGS`` in its own process; stdout and stderr captured as text.

    ``env`` adds variables to this process's environment (e.g. ``WIDE``); ``stdin`` is written
    to the command's input.
    """
    environment = {**os.environ, **env} if env is not None else None
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout, env=environment, input=stdin
    )


def invoke(*args: str):
    """``bespoke-fractal ARGS`` in this process with click's test runner (a ``click.testing.Result``):
    for commands that need this process's state, or to skip a new interpreter's start-up."""
    from click.testing import CliRunner

    from bespoke_fractal.cli import main

    return CliRunner().invoke(main, list(args))


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``Error:`` line of a failed command, without a traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def torsiondrive_ids(client) -> set[int]:
    """Ids of every torsion drive record on the server ``client`` reads."""
    return {record.id for record in client.query_records(record_type="torsiondrive")}
