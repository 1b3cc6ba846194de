"""The QC programs behind the managers give the numbers the programs give when run directly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bespoke_fractal.executor import BespokeExecutor
from bespoke_fractal.qc import get_preset
from bespoke_fractal.qc.availability import active_managers, missing_program
from bespoke_fractal.qc.check import WATER_ANGSTROM, check_spec
from bespoke_fractal.workflow import BespokeWorkflowFactory

EXE = str(Path(sys.executable).parent / "bespoke-fractal")
BOHR_PER_ANGSTROM = 1.0 / 0.52917721067
HAS_PSI4 = shutil.which("psi4") is not None
needs_psi4 = pytest.mark.skipif(
    not HAS_PSI4, reason="psi4 is not installed (scripts/setup-psi4.sh installs Debian's psi4 1.3.2)"
)
# B3LYP-D3(BJ) damping parameters (Grimme, Ehrlich, Goerigk, J. Comput. Chem. 32, 1456 (2011))
B3LYP_D3BJ = "1.0 0.3981 1.9889 4.4211 0.0 4\n"


@pytest.fixture(scope="module")
def submit_client(embedded_server, managers):
    client = embedded_server.connection("submit").client()
    assert active_managers(client, wait=60)
    return client


def test_managers_advertise_what_is_installed(submit_client):
    for manager in active_managers(submit_client):
        programs = set(manager.programs)
        assert {"rdkit", "xtb", "geometric", "torsiondrive"} <= programs
        assert ("psi4" in programs) == HAS_PSI4
        assert not programs & {"mopac", "torchani", "gaussian", "orca"}  # not installed here


def test_no_manager_with_the_program_is_said_not_silent(submit_client):
    spec = get_preset("debug").model_copy(update={"program": "mopac", "method": "pm7"})
    result = check_spec(submit_client, spec, timeout=30)
    assert not result.ok and result.record_id is None  # refused before anything was submitted
    # how many managers are connected depends on what tests before it stopped and restarted
    assert "mopac" in result.error and re.search(r"none of the [1-9]\d* connected", result.error)
    assert missing_program(active_managers(submit_client), "rdkit") is None


def test_executor_job_reports_the_missing_program(embedded_server, managers, admin_client):
    factory = BespokeWorkflowFactory.from_preset(
        "debug", **{"qc_spec.grid_spacing": 90, "qc_spec.program": "mopac", "qc_spec.method": "pm7"}
    )
    with BespokeExecutor(
        n_qc_compute_workers=0, directory=embedded_server.directory, poll_interval=0.5
    ) as ex:
        job_id = ex.submit("CCCC", factory)
        deadline = time.monotonic() + 300
        while not (output := ex.retrieve(job_id)).qc.blocked:
            assert output.status != "errored", output.error
            assert time.monotonic() < deadline, output
            time.sleep(0.5)
    assert "waiting for a compute manager with mopac and geometric" in output.qc.blocked
    assert output.stage.type == "qc-generation" and output.qc.total == 1 and output.qc.complete == 0
    admin_client.cancel_records(output.qc.record_ids)


def test_rdkit_fix_makes_energies_and_gradients_consistent():
    """In-process: the harness's analytic gradient against a finite difference of its energy."""
    script = Path(__file__).parent / "data" / "rdkit_gradient_check.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    patched, before, after, energy_scale = out.stdout.split()
    assert patched == "True"
    assert float(before) == pytest.approx(3.571, abs=1e-3)  # qcengine 0.52 as shipped
    assert float(after) == pytest.approx(1.0, abs=1e-3)
    assert float(energy_scale) == pytest.approx(4.184, abs=1e-9)


def test_xtb_through_manager_equals_xtb_api(submit_client):
    from xtb.interface import Calculator, Param

    result = check_spec(submit_client, get_preset("xtb"))
    assert result.ok, result.error
    numbers = np.array([8, 1, 1])
    calculator = Calculator(Param.GFN2xTB, numbers, np.array(WATER_ANGSTROM) * BOHR_PER_ANGSTROM)
    calculator.set_verbosity(0)
    direct = calculator.singlepoint().get_energy()
    assert result.energy_hartree == pytest.approx(direct, abs=1e-6)
    assert result.version and result.seconds is not None


def test_qc_check_command_prints_a_table(embedded_server, managers):
    args = [
        "qc",
        "check",
        "--preset",
        "debug",
        "--preset",
        "xtb",
        "--directory",
        str(embedded_server.directory),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if re.search(r"│ OK\s*│$", line.rstrip())]
    assert len(rows) == 2, result.stdout
    assert "rdkit" in result.stdout and "gfn2-xtb" in result.stdout


def run_psi4_directly(method: str, basis: str, workdir: Path, path: str) -> float:
    """The same single point through psi4's own input file, outside QCFractal and qcengine."""
    atoms = "\n".join(
        f"{symbol} {x:.10f} {y:.10f} {z:.10f}"
        for symbol, (x, y, z) in zip("OHH", WATER_ANGSTROM, strict=True)
    )
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "input.dat").write_text(
        f"molecule {{\n0 1\n{atoms}\nunits angstrom\nno_reorient\nno_com\nsymmetry c1\n}}\n"
        f"set basis {basis}\nE, wfn = gradient('{method}', return_wfn=True)\n"
        "print_out('BESPOKE_ENERGY %.12f\\n' % wfn.energy())\n"
    )
    env = {**os.environ, "PATH": path, "HOME": str(workdir), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        ["psi4", "-n", "1", "-i", "input.dat", "-o", "output.dat"],
        cwd=workdir,
        env=env,
        check=True,
        timeout=900,
    )
    return float(re.search(r"BESPOKE_ENERGY (-?\d+\.\d+)", (workdir / "output.dat").read_text()).group(1))


@needs_psi4
@pytest.mark.parametrize("basis", ["sto-3g", "dzvp"])
def test_psi4_b3lyp_d3bj_through_manager_equals_psi4(submit_client, managers, basis, tmp_path):
    """A small basis in every run with psi4; DZVP is the OpenFF default level itself."""
    spec = get_preset("default", basis=basis)
    with_d3 = check_spec(submit_client, spec)
    assert with_d3.ok, with_d3.error
    assert with_d3.version.startswith("1.")
    # the manager's task PATH: its dftd3 for psi4 1.3
    path = os.pathsep.join([str(managers.directory / "bin"), os.environ["PATH"]])
    direct = run_psi4_directly("b3lyp-d3bj", basis, tmp_path / "psi4", path)
    assert with_d3.energy_hartree == pytest.approx(direct, abs=1e-6)

    plain = check_spec(submit_client, spec.model_copy(update={"method": "b3lyp"}))
    assert plain.ok, plain.error
    (tmp_path / "d3").mkdir()
    symbols = "\n".join(f"{s} {x} {y} {z}" for s, (x, y, z) in zip("OHH", WATER_ANGSTROM, strict=True))
    (tmp_path / "d3" / "water.xyz").write_text(f"3\n\n{symbols}\n")
    (tmp_path / "d3" / ".dftd3par.local").write_text(B3LYP_D3BJ)
    out = subprocess.run(
        ["dftd3", "water.xyz"], cwd=tmp_path / "d3", capture_output=True, text=True, check=True,
        env={**os.environ, "PATH": path},
    )  # fmt: skip
    dispersion = float(re.search(r"Edisp /kcal,au:\s+\S+\s+(\S+)", out.stdout).group(1))
    print(
        f"psi4 {basis}: manager {with_d3.energy_hartree:.10f}, psi4 input file {direct:.10f}, "
        f"D3BJ - plain {with_d3.energy_hartree - plain.energy_hartree:.10f}, dftd3 {dispersion:.10f} Eh"
    )
    assert dispersion < -1e-4  # a real correction, not zero
    assert with_d3.energy_hartree - plain.energy_hartree == pytest.approx(dispersion, abs=1e-8)
