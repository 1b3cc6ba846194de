"""A warm task server: QC task scripts run in forks of a process that has imported qcengine.

qcfractalcompute runs every QC task as a fresh ``python3 qcengine_compute.py INPUT`` process.
Importing qcengine, geomeTRIC and RDKit, and qcengine describing the node (py-cpuinfo), take
3-4 s, which for MMFF94 and GFN2-xTB optimisations is most of a task's cost. Each compute
manager started by this project runs one warm server beside it; the managers' ``python3`` shim
hands a task script to it (:mod:`bespoke_fractal.manager.warm_client`), and the server forks a
child that already holds the imports and the qcengine fixes of every QC program
(:mod:`bespoke_fractal.qc.programs`). The child gets the client's stdin, stdout and stderr
(passed over the socket), its working directory, environment and arguments, and its exit code
goes back to the client, so the manager sees an ordinary process.

The server is single-threaded (forking is safe), accepts connections only from its own user on
a 0600 socket, kills a child whose client went away (a killed or timed-out task), and its
children die with it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from bespoke_fractal.processes import die_with_parent

logger = logging.getLogger(__name__)

SOCKET_ENV = "BESPOKE_FRACTAL_WARM_SOCKET"
DISABLE_ENV = "BESPOKE_FRACTAL_NO_WARM"  # set (to anything) to run every task cold
MAX_REQUEST = 1 << 20
# imported once by the server before each QC program's own (QCProgram.preload); a module that
# is not installed is skipped
BASE_PRELOAD = ("numpy", "qcelemental", "qcengine")


def preload_modules() -> tuple[str, ...]:
    """What the server imports: :data:`BASE_PRELOAD`, then each registered program's modules."""
    from bespoke_fractal.qc.programs import list_programs

    return BASE_PRELOAD + tuple(module for program in list_programs() for module in program.preload)


def socket_path_for(config_file: Path) -> Path:
    """Where the warm server of the manager configured by `config_file` listens."""
    return config_file.with_suffix(".sock")


def start_beside(config_file: Path) -> subprocess.Popen | None:
    """Start the warm server of the manager configured by `config_file` (this process); the
    manager's tasks find it through ``BESPOKE_FRACTAL_WARM_SOCKET``. None when disabled."""
    if os.environ.get(DISABLE_ENV):
        return None
    path = socket_path_for(config_file.resolve())
    if len(str(path)) > 100:  # beyond what a UNIX socket address holds
        path = Path(tempfile.mkdtemp(prefix="bf-warm-")) / "task.sock"
    os.environ[SOCKET_ENV] = str(path)
    argv = [sys.executable, "-m", __name__, str(path), "--parent", str(os.getpid())]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def preload() -> list[str]:
    """Import what QC tasks need and apply the qcengine fixes; the modules imported."""
    from bespoke_fractal.compat.qcengine import apply

    loaded = []
    for name in preload_modules():
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional program, or one that cannot load here
            continue
        loaded.append(name)
    apply()
    try:  # what qcengine learns about the node, once (py-cpuinfo alone spends ~1 s per process)
        import qcengine.config

        qcengine.config.get_global()
    except Exception:  # noqa: BLE001 - then each task finds out for itself, as without this server
        pass
    return loaded


def _read_request(connection: socket.socket) -> tuple[dict, list[int]]:
    """One request: a 4-byte length, JSON, and the client's stdin/stdout/stderr descriptors."""
    connection.settimeout(10)
    header, fds, _flags, _address = socket.recv_fds(connection, 4, 3)
    if len(header) != 4 or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("incomplete request")
    (length,) = struct.unpack("!I", header)
    if length > MAX_REQUEST:
        raise ValueError("request too large")
    body = b""
    while len(body) < length:
        chunk = connection.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    connection.settimeout(None)
    return json.loads(body), fds


def _run_child(request: dict, fds: list[int], server_fds: list[int]) -> None:
    """In the fork: become the task process the client stands for, run its script, exit."""
    code = 1
    try:
        for fd in server_fds:  # the listener and the server's side of every connection
            os.close(fd)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        die_with_parent(None)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        code = 0
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - reported like an uncaught exception would be
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _allowed(connection: socket.socket) -> bool:
    """The peer runs as this server's user."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid == os.getuid()


def serve(path: Path) -> None:
    """Listen on `path` until killed; one fork per task."""
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    listener.listen(64)
    clients: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client connection)
    by_connection: dict[int, int] = {}  # connection fd -> child pid
    try:
        while True:
            connections = [connection for _pid, connection in clients.values()]
            ready, _, _ = select.select([listener, *connections, *clients], [], [])
            for item in ready:
                if item is listener:
                    _accept(listener, clients, by_connection)
                elif isinstance(item, socket.socket):
                    # the client sends nothing after its request: readable means it went away
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(by_connection[item.fileno()], signal.SIGKILL)
                else:
                    _reap(item, clients, by_connection)
    finally:
        path.unlink(missing_ok=True)


def _accept(listener: socket.socket, clients: dict, by_connection: dict) -> None:
    connection, _ = listener.accept()
    try:
        if not _allowed(connection):
            raise ValueError("a client of another user")
        request, fds = _read_request(connection)
    except (OSError, ValueError) as exc:
        logger.warning("refused a task request: %s", exc)
        connection.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    server_fds = [listener.fileno(), connection.fileno(), *clients]
    server_fds += [client.fileno() for _pid, client in clients.values()]
    pid = os.fork()
    if pid == 0:
        _run_child(request, fds, server_fds)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    clients[pidfd] = (pid, connection)
    by_connection[connection.fileno()] = pid


def _reap(pidfd: int, clients: dict, by_connection: dict) -> None:
    pid, connection = clients.pop(pidfd)
    by_connection.pop(connection.fileno(), None)
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    with contextlib.suppress(OSError):
        connection.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
    connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bespoke-fractal warm QC task server")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--parent", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    logging.basicConfig(level="INFO", format="[warm %(asctime)s] %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    loaded = preload()
    logger.info("task server ready on %s (preloaded %s)", args.socket, ", ".join(loaded))
    serve(args.socket)


if __name__ == "__main__":
    main()
