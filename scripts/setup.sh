#!/usr/bin/env bash
# Set up bespoke-fractal in this repository: a Python 3.11 virtual environment in .venv with the
# pinned stack from requirements/constraints.txt, and a PostgreSQL server for the embedded
# QCFractal server. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
VENV=.venv
STAMP="$VENV/.bespoke-fractal-installed"

find_python() {
    for candidate in "${BESPOKE_PYTHON:-}" python3.11 "$(command -v pyenv >/dev/null && pyenv prefix 3.11 2>/dev/null)/bin/python3.11"; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    echo "setup: Python 3.11 is needed (xtb's wheels stop at 3.11); set BESPOKE_PYTHON" >&2
    return 1
}

ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing PostgreSQL (Debian package 'postgresql')"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        # Debian starts a cluster of its own; the embedded server runs a private one instead.
        (command -v service >/dev/null && service postgresql stop) >/dev/null 2>&1 || true
    else
        echo "setup: PostgreSQL server programs are missing: install Debian's 'postgresql' package" >&2
        return 1
    fi
}

ensure_postgres
if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/uv" ] || [ "$("$VENV/bin/uv" --version | awk '{print $2}')" != "$UV_VERSION" ]; then
    "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
fi
want="$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    # --compile-bytecode: every QC task starts a fresh Python; without .pyc files (and with
    # PYTHONDONTWRITEBYTECODE set) each one spends ~2 s compiling geomeTRIC and qcengine.
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --compile-bytecode \
        -c requirements/constraints.txt -e '.[test]'
    "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null 2>&1 || true
    echo "$want" > "$STAMP"
fi
