"""A full disk, a read-only directory, a port in use, stale PID and lock files: one clear
message each, and nothing corrupted. The disk and the read-only directory are real mounts."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess

import pytest
from helpers import one_error_line, run_cli

from bespoke_fractal import processes
from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.executor import BespokeExecutor, JobStore, submit_to_store
from bespoke_fractal.server import EmbeddedServer

DEBUG = ["--workflow", "debug"]


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'mount failed'}); needs root with mounts")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a disk that fills up."""
    path = tmp_path / "disk"
    path.mkdir()
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path))
    yield path
    subprocess.run(["umount", "--lazy", str(path)], check=False)  # even while a file is open


@pytest.fixture
def read_only(tmp_path):
    """A directory holding a job store, then bind-mounted read-only over itself."""
    path = tmp_path / "readonly"
    path.mkdir()
    store = JobStore.in_directory(path)
    job_id = submit_to_store(store, "CCCC", "debug")
    store.close()
    mount("--bind", str(path), str(path))
    mount("-o", "remount,ro,bind", str(path))
    yield path, job_id
    subprocess.run(["umount", "--lazy", str(path)], check=False)  # even while a file is open


def test_full_disk_refuses_a_submission_and_keeps_the_jobs(small_disk):
    directory = small_disk / "executor"
    directory.mkdir()
    store = JobStore.in_directory(directory)
    first = submit_to_store(store, "CCCC", "debug")
    store.close()
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass  # the disk is full
    line = one_error_line(
        run_cli("executor", "submit", "--directory", str(directory), "--smiles", "CCCCC", *DEBUG)
    )
    assert "no space left" in line, line
    filler.unlink()
    check = sqlite3.connect(directory / "jobs.sqlite").execute("PRAGMA integrity_check").fetchone()[0]
    assert check == "ok"
    outputs = JobStore.in_directory(directory).outputs()
    assert [o.id for o in outputs] == [first] and outputs[0].name == "CCCC"


def test_read_only_directory_is_one_line_and_untouched(read_only):
    path, job_id = read_only
    before = {p.name: p.stat().st_mtime for p in path.iterdir()}
    for args in (
        ("executor", "submit", "--directory", str(path), "--smiles", "CCCCC", *DEBUG),
        ("executor", "launch", "--directory", str(path), "--n-qc-compute-workers", "0"),
    ):
        line = one_error_line(run_cli(*args))
        assert "read-only" in line.lower() or "readonly" in line.lower(), line
    with pytest.raises(BespokeFractalError, match="(?i)read-only"):
        BespokeExecutor(n_qc_compute_workers=0, directory=path).__enter__()
    assert {p.name: p.stat().st_mtime for p in path.iterdir()} == before
    assert [o.id for o in JobStore.in_directory(path).outputs()] == [job_id]  # still readable


def test_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(
            run_cli("server", "start", "--directory", str(tmp_path / "s"), "--port", str(port))
        )
    assert f"port {port}" in line and "in use" in line


def test_stale_pid_and_lock_files_from_a_crashed_run_are_ignored(tmp_path):
    directory = tmp_path / "executor"
    (directory / "qcfractal").mkdir(parents=True)
    server = EmbeddedServer(directory)
    # a crashed run's PID file naming a PID now used by another process (init, started long ago)
    server.pid_file.write_text("1 1.000\n")
    assert processes.read_pid(server.pid_file) is None and not server.pid_file.exists()
    (directory / "executor.lock").write_text("999999\n")  # the lock file of a crashed executor
    store = JobStore.in_directory(directory)
    submit_to_store(store, "CCCC", "debug")
    listed = run_cli("executor", "list", "--directory", str(directory), "--json")
    assert listed.returncode == 0 and '"CCCC"' in listed.stdout
    submitted = run_cli("executor", "submit", "--directory", str(directory), "--smiles", "CCCCC", *DEBUG)
    assert submitted.returncode == 0, submitted.stderr
    assert "no executor is running" in submitted.stderr  # the stale lock is not taken for a live one
    os.chmod(directory, 0o755)
