"""``python3 SCRIPT ARGS...`` for a manager's QC task, run by its warm task server.

Started by the managers' ``python3`` shim as ``python -S warm_client.py PYTHON SCRIPT ARGS...``
(standard library only, so it starts in milliseconds). It passes its stdin, stdout, stderr,
working directory, environment and arguments to the server named by
``BESPOKE_FRACTAL_WARM_SOCKET`` (:mod:`bespoke_fractal.manager.warm`) and ends as the task did:
same exit code, or killed by the same signal. Killing this process kills the task. Without a
server it runs ``PYTHON -m bespoke_fractal.compat.qcengine SCRIPT ARGS...`` itself.
"""

import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "BESPOKE_FRACTAL_WARM_SOCKET"


def _cold(python: str, args: list) -> None:
    os.execv(python, [python, "-m", "bespoke_fractal.compat.qcengine", *args])


def main() -> None:
    python, args = sys.argv[1], sys.argv[2:]
    path = os.environ.get(SOCKET_ENV)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not path:
            raise OSError("no warm server")
        connection.connect(path)
    except OSError:
        connection.close()
        _cold(python, args)
    request = json.dumps({"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(connection, [struct.pack("!I", len(request))], [0, 1, 2])
    connection.sendall(request)
    reply = b""
    while len(reply) < 4:
        chunk = connection.recv(4 - len(reply))
        if not chunk:
            sys.stderr.write("bespoke-fractal: the warm task server went away during the task\n")
            sys.exit(70)
        reply += chunk
    (code,) = struct.unpack("!i", reply)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
