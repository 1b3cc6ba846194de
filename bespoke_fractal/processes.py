"""Detached child processes with PID files: start, check, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1
# Thread-count variables of the numerical libraries (OpenMP, MKL, OpenBLAS, numexpr, Accelerate,
# OpenMM's CPU platform); a child given N cores gets N in each.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "OPENMM_CPU_THREADS",
)


def thread_environment(cores: int) -> dict[str, str]:
    """The thread-count variables that keep a child's numerical libraries to ``cores`` cores."""
    return dict.fromkeys(THREAD_VARIABLES, str(max(1, int(cores))))


def read_pid(pid_file: Path) -> int | None:
    """PID recorded in ``pid_file`` if that very process is still alive, else None (a stale
    file, left by a crash or naming a PID the system has given to another process, goes)."""
    try:
        fields = pid_file.read_text().split()
        pid = int(fields[0])
        started = float(fields[1]) if len(fields) > 1 else None
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if not _alive(pid, started, pid_file):
        _kill_orphans(pid, started)
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def _kill_orphans(leader: int, started: float | None) -> None:
    """SIGKILL what is left of a dead process's session (its process group, as :func:`spawn`
    starts it): a QCFractal server killed with SIGKILL leaves its API process serving on.

    Only when no process has the leader's PID (so the group is not a new one under a recycled
    PID) and only members started after the leader."""
    if started is None:
        return
    try:
        if psutil.Process(leader).status() != psutil.STATUS_ZOMBIE:
            return
    except psutil.NoSuchProcess:
        pass
    killed = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == leader and proc.info["create_time"] >= started - 0.5:
                proc.kill()
                killed.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    psutil.wait_procs(killed, timeout=5)  # their ports are free for the successor


def _alive(pid: int, started: float | None, pid_file: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None:  # PID and start time name one process, ever
            return abs(proc.create_time() - started) < 0.5
        # older files hold the PID alone: a recycled PID belongs to a process started later
        return proc.create_time() <= pid_file.stat().st_mtime + 1.0
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False


def write_pid(pid_file: Path, pid: int) -> None:
    """Record ``pid`` with its start time, so that a recycled PID is never taken for it."""
    try:
        started = f" {psutil.Process(pid).create_time():.3f}"
    except psutil.NoSuchProcess:
        started = ""
    pid_file.write_text(f"{pid}{started}\n")


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op elsewhere).

    For worker processes: a coordinator killed with SIGKILL leaves no fit or fragmentation
    running behind it to race the work its successor restarts. With `parent_pid`, a process
    whose parent died before this call (it was reparented, so no signal would ever come) exits.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    cpu_affinity: Sequence[int] | None = None,
) -> int:
    """Start ``argv`` in its own session with output to ``log_file``; record its PID."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    preexec = None
    if cpu_affinity:
        cores = set(cpu_affinity)

        def preexec() -> None:
            os.sched_setaffinity(0, cores)

    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,
        )
    write_pid(pid_file, proc.pid)
    return proc.pid


def stop(pid_file: Path, *, timeout: float = 30.0, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process in ``pid_file`` and wait; SIGKILL after ``timeout``.

    Returns True when a running process was stopped.
    """
    pid = read_pid(pid_file)
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    pid_file.unlink(missing_ok=True)
    return True


def wait_for(predicate, timeout: float, interval: float = 0.25, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true, or raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
