"""Progress of waiting drives: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

STATES = ("complete", "running", "waiting", "error")


class DriveProgress:
    """Counts of records complete / running / waiting / errored while waiting."""

    def __init__(self, total: int, enabled: bool | None = None) -> None:
        self.total = total
        self.interactive = sys.stderr.isatty() if enabled is None else enabled
        self._last: tuple | None = None
        self._start = time.monotonic()
        self._progress: Progress | None = None
        self._task = None

    def __enter__(self) -> DriveProgress:
        if self.interactive:
            self._progress = Progress(
                TextColumn("torsion drives"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[summary]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("drives", total=self.total, summary="")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    @staticmethod
    def summary(counts: dict[str, int]) -> str:
        return ", ".join(f"{counts.get(state, 0)} {state}" for state in STATES)

    def update(self, counts: dict[str, int]) -> None:
        key = tuple(sorted(counts.items()))
        if self._progress is not None:
            done = sum(counts.get(s, 0) for s in ("complete", "error", "cancelled", "invalid"))
            self._progress.update(self._task, completed=done, summary=self.summary(counts))
        elif key != self._last:
            elapsed = time.monotonic() - self._start
            print(f"[{elapsed:7.1f} s] torsion drives: {self.summary(counts)}", file=sys.stderr)
        self._last = key

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=sys.stderr)
