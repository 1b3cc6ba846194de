"""The README's main job: an xtb torsion drive of paracetamol, then the cached re-run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import run_cli


def _demo(directory: Path) -> subprocess.CompletedProcess:
    return run_cli("qc", "demo", "--directory", str(directory), timeout=1800)


def _table(stdout: str) -> dict[int, float]:
    rows = re.findall(r"│\s*(-?\d+)\s*│\s*(-?\d+\.\d+)\s*│\s*(\d+\.\d+)\s*│", stdout)
    return {int(angle): float(rel) for angle, _e, rel in rows}


def test_demo_drives_with_xtb_then_reuses_the_cache(embedded_server, managers):
    first = _demo(embedded_server.directory)
    assert first.returncode == 0, first.stderr
    assert "xtb gfn2-xtb" in first.stdout
    profile = _table(first.stdout)
    assert sorted(profile) == list(range(-150, 181, 30))
    assert min(profile.values()) == 0.0
    # aryl-N rotation of an anilide: a real barrier of a few kcal/mol, not noise or a unit slip
    assert 1.0 < max(profile.values()) < 15.0

    second = _demo(embedded_server.directory)
    assert second.returncode == 0, second.stderr
    assert _table(second.stdout) == profile
    record = re.search(r"record (\d+)", first.stdout).group(1)
    assert f"record {record}" in second.stdout
    # found complete at once: every progress line of the re-run already says so
    progress = [line for line in second.stderr.splitlines() if "torsion drives:" in line]
    assert progress and all("1 complete" in line for line in progress)
