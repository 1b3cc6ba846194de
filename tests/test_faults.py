"""Faults caused for real: a QC task process killed mid-calculation is retried."""

from __future__ import annotations

import time

import psutil
from openff.toolkit import Molecule

from bespoke_fractal.qc import default_dihedral, get_preset


def _task_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(part.endswith("qcengine_compute.py") for part in cmdline):
            found.append(proc)
    return found


def test_killed_task_is_reset_and_drive_completes(stage):
    molecule = Molecule.from_smiles("CCCF")
    spec = get_preset("debug", grid_spacing=90)
    drive = stage.submit(molecule, [default_dihedral(molecule, (1, 2))], spec)[0]
    deadline = time.monotonic() + 120
    victims: list[psutil.Process] = []
    while not victims:
        assert time.monotonic() < deadline, "no QC task process appeared"
        victims = _task_processes()
        time.sleep(0.05)
    for proc in victims:
        proc.kill()  # as the kernel's OOM killer would
    result = stage.wait([drive], timeout=900, max_resets=3, progress=False)[0]
    assert result.ok, result.error
    assert 1 <= result.resets <= 3
