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
from helpers import WIDE, run_cli

from bespoke_fractal.compat import qcengine as compat_qcengine
from bespoke_fractal.executor import BespokeExecutor
from bespoke_fractal.manager import warm
from bespoke_fractal.manager.local import write_task_bin
from bespoke_fractal.qc import get_preset, list_presets
from bespoke_fractal.qc import programs as qc_programs
from bespoke_fractal.qc.availability import active_managers, missing_program
from bespoke_fractal.qc.check import WATER_ANGSTROM, check_spec
from bespoke_fractal.qc.plan import CostModel, recorded_costs
from bespoke_fractal.qc.programs import EnergyCheck, QCProgram, RecordedCost, energy_check_for
from bespoke_fractal.qc.programs import base as programs_base
from bespoke_fractal.workflow import BespokeWorkflowFactory

BOHR_PER_ANGSTROM = 1.0 / 0.52917721067
HAS_PSI4 = shutil.which("psi4") is not None
needs_psi4 = pytest.mark.skipif(
    not HAS_PSI4, reason="psi4 is not installed (scripts/setup-psi4.sh installs Debian's psi4 1.3.2)"
)
# B3LYP-D3(BJ) damping parameters (Grimme, Ehrlich, Goerigk, J. Comput. Chem. 32, 1456 (2011))
B3LYP_D3BJ = "1.0 0.3981 1.9889 4.4211 0.0 4\n"


def test_every_preset_program_has_a_module():
    registered = {program.name for program in qc_programs.list_programs()}
    assert {"rdkit", "xtb", "psi4", "geometric"} <= registered
    assert {spec.program for spec in list_presets()} <= registered


def test_registry_answers_for_each_kind_of_program_knowledge(tmp_path):
    assert [fix.__name__ for fix in compat_qcengine.FIXES] == ["fix_old_psi4", "fix_rdkit_units"]
    assert compat_qcengine.fix_rdkit_units is qc_programs.get_program("rdkit").task_fixes[0]
    assert warm.preload_modules() == (
        *warm.BASE_PRELOAD,
        "qcengine.procedures.geometric",
        "geometric",
        "geometric.optimize",
        "rdkit.Chem.AllChem",
        "xtb.qcschema.harness",
    )
    assert set(recorded_costs()) == {"rdkit/mmff94/none", "xtb/gfn2-xtb/none", "psi4/b3lyp-d3bj/dzvp"}
    assert CostModel.recorded(get_preset("debug")).core_seconds_per_gradient == 0.09
    assert isinstance(energy_check_for("rdkit"), type(qc_programs.get_program("rdkit")))
    assert energy_check_for("no-such-program").check_energies(None, None, [], []) == EnergyCheck()
    bin_dir = write_task_bin(tmp_path / "bin")
    assert (bin_dir / "python3").is_file()
    assert (bin_dir / "dftd3").is_file() == (
        "dftd3" in qc_programs.get_program("psi4").task_commands("python")
    )


def test_a_new_program_is_one_registration(monkeypatch, tmp_path):
    """Everything that asks about QC programs sees a program registered by one module (alone in
    the registry here, so that no real qcengine fix patches this test process)."""
    monkeypatch.setattr(programs_base, "_PROGRAMS", {})
    applied = []

    def fix_new_harness() -> bool:
        applied.append(True)
        return True

    class NewProgram(QCProgram):
        name = "new-program"
        task_fixes = (fix_new_harness,)
        preload = ("json",)
        costs = {"hf/sto-3g": RecordedCost(core_seconds_per_gradient=2, gradients_per_grid_point=10)}

        def check_energies(self, spec, molecule, geometries, energies) -> EnergyCheck:
            return EnergyCheck(scale=2.0)

        def task_commands(self, python: str) -> dict[str, str | None]:
            return {"new-program": "exec true\n"}

    qc_programs.register_program(NewProgram())
    with pytest.raises(ValueError, match="registered twice"):
        qc_programs.register_program(NewProgram())
    assert compat_qcengine.apply() == ["fix_new_harness"] and applied
    assert warm.preload_modules() == (*warm.BASE_PRELOAD, "json")
    assert set(recorded_costs()) == {"new-program/hf/sto-3g"}
    spec = get_preset("debug").model_copy(
        update={"program": "new-program", "method": "hf", "basis": "sto-3g"}
    )
    assert CostModel.recorded(spec).core_seconds_per_gradient == 2
    assert energy_check_for("new-program").check_energies(spec, None, [], []).scale == 2.0
    assert sorted(path.name for path in write_task_bin(tmp_path / "bin").iterdir()) == [
        "new-program",
        "python3",
    ]


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
    result = run_cli(*args, timeout=600, env=WIDE)
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
