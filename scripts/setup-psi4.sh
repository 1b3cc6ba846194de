#!/usr/bin/env bash
# Optional: make the `default` QC preset (psi4 B3LYP-D3BJ/DZVP) runnable on a Debian machine.
# Installs Debian's psi4 (1.3.2) when run as root; bespoke-fractal's managers then drive it
# through qcengine with the compatibility of bespoke_fractal/compat/ (psi4 < 1.4 through
# `psi4 --json`, -D3BJ through a classic `dftd3` command on s-dftd3). Idempotent.
# On a cluster with conda, install psi4 there instead (docs/qc-programs.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v psi4 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup-psi4: installing Debian's psi4"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq psi4 >/dev/null
    else
        echo "setup-psi4: psi4 is missing: install Debian's 'psi4' package (as root) or psi4 from conda" >&2
        exit 1
    fi
fi
[ -x .venv/bin/python ] || ./scripts/setup.sh
.venv/bin/python -c 'import dftd3' 2>/dev/null || ./scripts/setup.sh
echo "setup-psi4: psi4 $(cd /tmp && psi4 --version) at $(command -v psi4)"
echo "setup-psi4: restart running managers, then check with: .venv/bin/bespoke-fractal qc check --preset default"
