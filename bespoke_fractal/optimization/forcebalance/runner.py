"""The ForceBalance process: ``python -m bespoke_fractal.optimization.forcebalance.runner JOB_DIR``.

Applies the compatibility patches, runs ForceBalance's optimiser on ``JOB_DIR/optimize.in`` and
writes ``JOB_DIR/summary.json`` (converged, iterations). Unlike ForceBalance's own script, which
prints a crash and exits 0, a crash here exits 1 with the traceback on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

SUMMARY_NAME = "summary.json"


def run(job_directory: Path) -> dict:
    """Run the job in `job_directory` (the working directory becomes it); return the summary."""
    from bespoke_fractal.optimization.forcebalance import compat, relaxed

    patches = compat.apply()
    relaxed.register()
    os.chdir(job_directory)
    print(f"bespoke_fractal: compatibility patches applied: {', '.join(patches) or 'none'}", flush=True)

    import numpy

    # As ForceBalance's own script: its optimiser relies on floating-point errors raising
    # (e.g. a zero expected step is caught as an exception, not turned into inf).
    numpy.seterr(all="raise")

    from forcebalance.forcefield import FF
    from forcebalance.objective import Objective
    from forcebalance.optimizer import Optimizer
    from forcebalance.parser import parse_inputs

    from bespoke_fractal.optimization.forcebalance.inputs import INPUT_NAME

    options, target_options = parse_inputs(INPUT_NAME)
    force_field = FF(options)
    objective = Objective(options, target_options, force_field)
    optimizer = Optimizer(options, objective, force_field)
    optimizer.Run()
    return {
        "converged": not optimizer.failmsg,
        "iterations": int(optimizer.iteration - optimizer.iterinit),
        "max_iterations": int(optimizer.maxstep),
        "patches": patches,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bespoke_fractal.optimization.forcebalance.runner JOB_DIR", file=sys.stderr)
        return 2
    job_directory = Path(argv[0]).resolve()
    (job_directory / SUMMARY_NAME).unlink(missing_ok=True)
    try:
        summary = run(job_directory)
    except BaseException:  # noqa: BLE001 - the parent reads the traceback from the log
        sys.stdout.flush()
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    (job_directory / SUMMARY_NAME).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
