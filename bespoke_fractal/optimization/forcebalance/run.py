"""Run a ForceBalance torsion fit in its own process group and read what it did."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from openff.toolkit import ForceField
from pydantic import BaseModel

from bespoke_fractal.optimization.forcebalance.inputs import (
    FORCE_FIELD_NAME,
    INPUT_NAME,
    check_job,
    write_job,
)
from bespoke_fractal.optimization.forcebalance.runner import SUMMARY_NAME
from bespoke_fractal.processes import die_with_parent, thread_environment
from bespoke_fractal.schema.fits import ForceBalanceResult, TorsionProfile
from bespoke_fractal.schema.optimizers import ForceBalanceSettings

LOG_NAME = "forcebalance.log"
MARKER_NAME = ".bespoke-fractal-forcebalance"
MAX_MESSAGE = 400
RUNNER_MODULE = "bespoke_fractal.optimization.forcebalance.runner"
# Seconds between SIGTERM and SIGKILL when the process group is stopped.
KILL_GRACE = 5.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PROGRESS = re.compile(
    rf"^\s*(\d+)\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s*$"
)
_FINAL = re.compile(rf"Full:\s*({_FLOAT})\s+Un-penalized:\s*({_FLOAT})")


class LogSummary(BaseModel):
    """What the ForceBalance log says."""

    objectives: list[tuple[int, float]] = []
    final_objective: float | None = None
    stop_reason: str | None = None
    error: str | None = None
    last_line: str | None = None


def run_forcebalance(
    force_field: ForceField,
    parameter_ids: list[str],
    profiles: list[TorsionProfile],
    settings: ForceBalanceSettings,
    work_directory: Path,
    n_cores: int = 1,
    timeout: float = 1800.0,
    keep: bool = False,
) -> ForceBalanceResult:
    """Fit every k of the ProperTorsions `parameter_ids` to `profiles` with ForceBalance.

    The job is written to `work_directory` (created; an earlier ForceBalance job there is
    replaced) and run as ``python -m bespoke_fractal.optimization.forcebalance.runner`` in its
    own process group with `n_cores` threads, output in ``forcebalance.log``. The whole group is
    killed after `timeout` seconds. The directory is deleted after a converged fit unless `keep`;
    otherwise it is kept and named in the result. Bad arguments raise ValueError; a fit that
    fails, crashes or times out returns ``converged=False`` with a one-line message.
    """
    start = time.perf_counter()
    work_directory = Path(work_directory).resolve()
    check_job(force_field, parameter_ids, profiles)
    _prepare_directory(work_directory)
    write_job(work_directory, force_field, parameter_ids, profiles, settings)

    log_path = work_directory / LOG_NAME
    returncode, timed_out = _run_process(work_directory, log_path, n_cores, timeout)
    log = summarize_log(log_path.read_text(errors="replace") if log_path.exists() else "")
    summary_path = work_directory / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if returncode == 0 and summary_path.exists() else None
    fitted_path = work_directory / "result" / INPUT_NAME.removesuffix(".in") / FORCE_FIELD_NAME
    fitted = fitted_path.read_text() if fitted_path.exists() else None

    objective_initial = log.objectives[0][1] if log.objectives else None
    objective_final = log.final_objective
    if objective_final is None and log.objectives:
        objective_final = log.objectives[-1][1]
    iterations = (
        summary["iterations"] if summary else (max(i for i, _ in log.objectives) if log.objectives else 0)
    )

    converged = False
    if timed_out:
        message = (
            f"ForceBalance timed out after {timeout:g} s (iteration {iterations}); "
            "its process group was killed"
        )
    elif summary is None:
        if log.error:
            message = f"ForceBalance failed: {log.error}"
        else:
            message = f"ForceBalance failed ({_exit_description(returncode)}): {log.last_line or 'no output'}"
    elif not summary["converged"]:
        message = _not_converged_message(summary, log)
    elif fitted is None:
        message = f"ForceBalance converged but wrote no {fitted_path.relative_to(work_directory)}"
    else:
        converged = True
        message = ""

    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    kept = (not converged) or keep
    if not kept:
        shutil.rmtree(work_directory, ignore_errors=True)
    return ForceBalanceResult(
        converged=converged,
        iterations=iterations,
        objective_initial=objective_initial,
        objective_final=objective_final,
        seconds=time.perf_counter() - start,
        message=message,
        fitted_offxml=fitted,
        work_directory=work_directory if kept else None,
    )


def _prepare_directory(directory: Path) -> None:
    """Create `directory` marked as ours; clear it if it holds an earlier job, refuse anything else."""
    if directory.is_dir() and any(directory.iterdir()):
        if not ((directory / MARKER_NAME).exists() or (directory / INPUT_NAME).exists()):
            raise ValueError(
                f"{directory} is not empty and not a ForceBalance job directory; not touching it"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER_NAME).write_text("ForceBalance job directory of bespoke_fractal; may be deleted\n")


def _child_environment(n_cores: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(thread_environment(n_cores))
    # AmberTools (sqm, for AM1-BCC charges) lives next to this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The runner imports this package from the job directory, whatever the caller's sys.path was.
    package_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # the log is complete up to the moment of a kill
    env["MPLBACKEND"] = "Agg"
    # ForceBalance's smirnoff_hack caches AM1-BCC charges per molecule; Interchange clears its own
    # charge cache on every system it builds, so without this each evaluation reruns sqm.
    env["ENABLE_FB_SMIRNOFF_CACHING"] = "true"
    return env


def _run_process(directory: Path, log_path: Path, n_cores: int, timeout: float) -> tuple[int | None, bool]:
    """Run the runner; return (exit code or None, timed out)."""
    argv = [sys.executable, "-m", RUNNER_MODULE, str(directory)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_environment(n_cores),
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        try:
            return process.wait(timeout=max(0.0, timeout)), False
        except subprocess.TimeoutExpired:
            _kill_group(process)
            with open(log_path, "ab") as tail:
                tail.write(f"\nbespoke_fractal: timeout of {timeout:g} s reached; killed\n".encode())
            return None, True
        finally:
            if process.poll() is None:  # interrupted (e.g. KeyboardInterrupt): never leave it behind
                _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group (and any descendant that left it), SIGKILL what survives."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        for child in descendants:
            try:
                child.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            process.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            continue
        _, alive = psutil.wait_procs(descendants, timeout=KILL_GRACE if sig == signal.SIGTERM else 1.0)
        if not alive:
            break
        descendants = alive


def summarize_log(text: str) -> LogSummary:
    """Objective per iteration, final objective, why it stopped, and the error of a crash."""
    lines = [_ANSI.sub("", line).rstrip() for line in text.replace("\r", "\n").splitlines()]
    summary = LogSummary()
    for index, line in enumerate(lines):
        if "-=X2=-" in line and "Step" in line and index + 1 < len(lines):
            match = _PROGRESS.match(lines[index + 1])
            if match:
                summary.objectives.append((int(match.group(1)), float(match.group(5))))
        elif (match := _FINAL.search(line)) is not None:
            summary.final_objective = float(match.group(1))
        elif "Maximum number of optimization steps reached" in line:
            summary.stop_reason = "max_iterations"
        elif "Step size is too small to continue" in line:
            summary.stop_reason = "step too small"
    summary.error = _error_line(lines)
    meaningful = [line.strip() for line in lines if _meaningful(line)]
    summary.last_line = meaningful[-1] if meaningful else None
    return summary


def _error_line(lines: list[str]) -> str | None:
    """The last exception of the log, with ForceBalance's own error message when it gave one."""
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if not starts:
        return None
    start = starts[-1]
    exception = next(
        (line.strip() for line in lines[start + 1 :] if line and not line.startswith((" ", "\t"))), None
    )
    if exception and ":" in exception and exception.split(":", 1)[1].strip():
        return exception
    # ForceBalance logs the reason with logger.error and then raises a bare RuntimeError.
    before = [line.strip() for line in lines[:start] if _meaningful(line)]
    reason = before[-1] if before else None
    if reason and exception:
        return f"{reason} ({exception})"
    return reason or exception


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    if not stripped or stripped[0] in "#-=|" or stripped.startswith("bespoke_fractal:"):
        return False
    return not re.search(r"Warning:|warnings\.warn|^\s*from |^\s*import ", line)


def _exit_description(returncode: int | None) -> str:
    if returncode is None:
        return "no exit status"
    if returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    if returncode == 0:
        return "exited without writing a summary"
    return f"exit code {returncode}"


def _not_converged_message(summary: dict, log: LogSummary) -> str:
    n = summary["iterations"]
    done = f"after {n} iteration{'s' if n != 1 else ''}"
    if log.stop_reason == "max_iterations":
        return f"ForceBalance stopped {done} (max_iterations={summary['max_iterations']}) without converging"
    if log.stop_reason == "step too small":
        return f"ForceBalance stopped {done} without converging: the step became too small to continue"
    return f"ForceBalance stopped {done} without converging"
