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


def read_pid(pid_file: Path) -> int | None:
    """PID recorded in ``pid_file`` if that process is still alive, else None (stale files go)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if not _alive(pid, pid_file):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def _alive(pid: int, pid_file: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        # A recycled PID belongs to a process started after the PID file was written.
        return proc.create_time() <= pid_file.stat().st_mtime + 1.0
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a no-op elsewhere).

    For worker processes: a coordinator killed with SIGKILL leaves no fit or fragmentation
    running behind it to race the work its successor restarts.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


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
    pid_file.write_text(f"{proc.pid}\n")
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
