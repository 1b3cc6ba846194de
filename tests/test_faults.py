"""Faults caused for real: a QC task process killed mid-calculation is retried."""

from __future__ import annotations

import time

import psutil
from openff.toolkit import Molecule
from qc_tasks import qc_tasks

from bespoke_fractal.qc import default_dihedral, get_preset


def test_killed_task_is_reset_and_drive_completes(stage):
    molecule = Molecule.from_smiles("CCCF")
    spec = get_preset("debug", grid_spacing=90)
    drive = stage.submit(molecule, [default_dihedral(molecule, (1, 2))], spec)[0]
    deadline = time.monotonic() + 120
    killed = 0
    while not killed:  # a task that ended between finding and killing it is no fault: try again
        assert time.monotonic() < deadline, "no QC task process of the drive appeared"
        for proc in qc_tasks("C3H7F"):  # this drive's tasks only
            try:
                proc.kill()  # as the kernel's OOM killer would
                killed += 1
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    result = stage.wait([drive], timeout=900, max_resets=3, progress=False)[0]
    assert result.ok, result.error
    assert 1 <= result.resets <= 3
