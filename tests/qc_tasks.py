"""Find the running QC task processes of one molecule, whatever else runs on the machine.

Only descendants of the test process count: the managers a test session starts (and their
warm task servers and tasks) are its children, so tasks of another pytest-xdist worker or of
another run on the machine are never touched."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import psutil

TASK_SCRIPT = "qcengine_compute.py"


def task_symbols(proc: psutil.Process) -> list[str] | None:
    """Element symbols of the molecule a running qcengine task works on (from its input file)."""
    try:
        cmdline = proc.cmdline()
        script = next(i for i, part in enumerate(cmdline) if part.endswith(TASK_SCRIPT))
        data = json.loads(Path(cmdline[script + 1]).read_text())
        return list(data["input_data"]["initial_molecule"]["symbols"])
    except (StopIteration, IndexError, OSError, ValueError, KeyError, TypeError, psutil.Error):
        return None


def hill_formula(symbols: list[str]) -> str:
    counts = Counter(symbols)
    order = ["C", "H"] if "C" in counts else []
    order += sorted(s for s in counts if s not in order)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order if s in counts)


def qc_tasks(formula: str) -> list[psutil.Process]:
    """Running QC task processes on a molecule of this Hill formula (e.g. "C3H7F")."""
    found = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        symbols = task_symbols(proc)
        if symbols is not None and hill_formula(symbols) == formula:
            found.append(proc)
    return found
