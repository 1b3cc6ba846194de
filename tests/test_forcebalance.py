"""ForceBalance 1.9.5 torsion fits run from our code: real ForceBalance, OpenMM and OpenFF toolkit.

Reference data: real RDKit MMFF94 torsion profiles on a 30° grid, computed with qcengine's
torsiondrive procedure by tests/data/make_profile.py (butane's C-C-C-C and biphenyl's
inter-ring torsion). The fits start from openff_unconstrained-2.2.1 with one bespoke proper
torsion (periodicities 1-4) added for the driven bond.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import psutil
import pytest
from openff.toolkit import ForceField
from openff.units import unit

from bespoke_fractal.optimization.forcebalance import run_forcebalance
from bespoke_fractal.optimization.forcebalance.inputs import KCAL_MOL_PER_HARTREE, write_job
from bespoke_fractal.optimization.forcebalance.run import LOG_NAME, RUNNER_MODULE, summarize_log
from bespoke_fractal.schema.fits import TorsionProfile
from bespoke_fractal.schema.optimizers import ForceBalanceSettings

# The fast tier (pytest -m fast) writes and checks ForceBalance's input and kills a run; the two
# fits run to the end (tens of seconds each) are left to the full suite.

DATA = Path(__file__).parent / "data"
BUTANE_SMIRKS = "[#6X4H3:1]-[#6X4H2:2]-[#6X4H2:3]-[#6X4H3:4]"
BIPHENYL_SMIRKS = "[#6X3H1:1]:[#6X3H0:2]-!@[#6X3H0:3]:[#6X3H1:4]"


def _profile(name: str) -> TorsionProfile:
    return TorsionProfile.model_validate_json((DATA / f"{name}_mmff94_30.json").read_text())


@pytest.fixture(scope="module")
def sage() -> ForceField:
    return ForceField("openff_unconstrained-2.2.1.offxml", load_plugins=False)


def _with_bespoke_torsion(
    sage: ForceField, profile: TorsionProfile, parameter_id: str, smirks: str, scale: float = 1.0
) -> ForceField:
    """Sage plus one proper torsion for the driven dihedral, at the end of the handler:
    periodicities 1-4, phase and k of the Sage parameter it replaces (times `scale`), else 0."""
    force_field = copy.deepcopy(sage)
    labels = force_field.label_molecules(profile.molecule().to_topology())[0]["ProperTorsions"]
    quad = tuple(profile.dihedral)
    base = labels[quad] if quad in labels else labels[quad[::-1]]
    k, phase = [], []
    for n in range(1, 5):
        if n in base.periodicity:
            i = base.periodicity.index(n)
            k.append(base.k[i] * scale)
            phase.append(base.phase[i])
        else:
            k.append(0.0 * unit.kilocalorie_per_mole)
            phase.append(0.0 * unit.degree)
    force_field.get_parameter_handler("ProperTorsions").add_parameter(
        {"smirks": smirks, "id": parameter_id, "periodicity": [1, 2, 3, 4], "phase": phase, "k": k}
        | {"idivf": [1.0] * 4}
    )
    labels = force_field.label_molecules(profile.molecule().to_topology())[0]["ProperTorsions"]
    assert (labels.get(quad) or labels[quad[::-1]]).id == parameter_id
    return force_field


def _k(force_field: ForceField, parameter_id: str) -> list[float]:
    parameter = force_field.get_parameter_handler("ProperTorsions").get_parameter({"id": parameter_id})[0]
    return [k.m_as(unit.kilocalorie_per_mole) for k in parameter.k]


def _runner_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if RUNNER_MODULE in cmdline and marker in cmdline:
            found.append(process)
    return found


@pytest.mark.fast
def test_job_directory(sage: ForceField, tmp_path: Path) -> None:
    """The job is laid out as ForceBalance's TorsionProfile_SMIRNOFF target reads it."""
    profile = _profile("butane")
    force_field = _with_bespoke_torsion(sage, profile, "bf-test-ccc", BUTANE_SMIRKS)
    # a mark left by an earlier fit on another parameter must not be fitted again
    force_field.get_parameter_handler("ProperTorsions").parameters[
        "[#6X4:1]-[#6X4:2]-[#6X4:3]-[#6X4:4]"
    ].add_cosmetic_attribute("parameterize", "k1")
    settings = ForceBalanceSettings(max_iterations=7, penalty_type="L1", torsion_prior=4.5)
    [name] = write_job(tmp_path, force_field, ["bf-test-ccc"], [profile], settings)

    options = (tmp_path / "optimize.in").read_text().splitlines()
    for line in (
        "maxstep 7",
        "penalty_type L1",
        "trust0 -0.25",
        "criteria 2",
        "type TorsionProfileRelaxed_SMIRNOFF",  # the default protocol: only the dihedral held
        "restrain_k 0.0",
    ):
        assert line in options
    frozen = settings.model_copy(update={"target": settings.target.model_copy(update={"protocol": "frozen"})})
    write_job(tmp_path / "frozen", force_field, ["bf-test-ccc"], [profile], frozen)
    frozen_options = (tmp_path / "frozen" / "optimize.in").read_text().splitlines()
    assert "type TorsionProfile_SMIRNOFF" in frozen_options and "restrain_k 1.0" in frozen_options
    assert "ProperTorsions/Proper/k : 4.5" in [line.strip() for line in options]
    written = ForceField(str(tmp_path / "forcefield" / "force-field.offxml"), allow_cosmetic_attributes=True)
    parameter = written.get_parameter_handler("ProperTorsions").get_parameter({"id": "bf-test-ccc"})[0]
    assert parameter._parameterize == "k1, k2, k3, k4"
    assert (tmp_path / "forcefield" / "force-field.offxml").read_text().count("parameterize=") == 1

    target = tmp_path / "targets" / name
    metadata = json.loads((target / "metadata.json").read_text())
    assert metadata["dihedrals"] == [list(profile.dihedral)]
    assert metadata["torsion_grid_ids"] == [[angle] for angle in profile.angles]
    energies = [
        float(line.split()[1]) for line in (target / "qdata.txt").read_text().splitlines() if "ENERGY" in line
    ]
    assert [e * KCAL_MOL_PER_HARTREE for e in energies] == pytest.approx(profile.energies_kcal_mol, abs=1e-9)
    assert (target / "scan.xyz").read_text().count("grid point") == len(profile.angles)
    assert (target / "conf.pdb").read_text().count("HETATM") == profile.molecule().n_atoms

    with pytest.raises(ValueError, match="no ProperTorsions parameter with id nope"):
        write_job(tmp_path / "other", force_field, ["nope"], [profile], settings)


@pytest.mark.fast
def test_bad_arguments_touch_nothing(sage: ForceField, tmp_path: Path) -> None:
    profile = _profile("butane")
    force_field = _with_bespoke_torsion(sage, profile, "bf-test-ccc", BUTANE_SMIRKS)
    with pytest.raises(ValueError, match="no ProperTorsions parameter with id nope"):
        run_forcebalance(force_field, ["nope"], [profile], ForceBalanceSettings(), tmp_path / "fb")
    assert not (tmp_path / "fb").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="not a ForceBalance job directory"):
        run_forcebalance(force_field, ["bf-test-ccc"], [profile], ForceBalanceSettings(), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_butane_fit_converges(sage: ForceField, tmp_path: Path) -> None:
    profile = _profile("butane")
    force_field = _with_bespoke_torsion(sage, profile, "bf-test-ccc", BUTANE_SMIRKS)
    work = tmp_path / "fb"

    result = run_forcebalance(force_field, ["bf-test-ccc"], [profile], ForceBalanceSettings(), work)

    assert result.converged, result.message
    assert result.message == ""
    assert 1 <= result.iterations <= 10
    assert result.objective_final < result.objective_initial
    fitted = ForceField(result.fitted_offxml, allow_cosmetic_attributes=True, load_plugins=False)
    initial, final = _k(force_field, "bf-test-ccc"), _k(fitted, "bf-test-ccc")
    assert max(abs(a - b) for a, b in zip(initial, final, strict=True)) > 1e-3
    assert result.work_directory is None and not work.exists()


def test_iteration_limit_keeps_directory(sage: ForceField, tmp_path: Path) -> None:
    profile = _profile("biphenyl")
    force_field = _with_bespoke_torsion(sage, profile, "bf-test-biphenyl", BIPHENYL_SMIRKS)
    work = tmp_path / "fb"

    result = run_forcebalance(
        force_field, ["bf-test-biphenyl"], [profile], ForceBalanceSettings(max_iterations=1), work
    )

    assert not result.converged
    assert result.iterations == 1
    assert result.message == "ForceBalance stopped after 1 iteration (max_iterations=1) without converging"
    assert "\n" not in result.message
    assert result.work_directory == work.resolve()
    assert (work / "optimize.in").is_file() and (work / LOG_NAME).is_file()
    assert result.objective_initial is not None and result.objective_final is not None


@pytest.mark.fast
def test_timeout_kills_forcebalance(sage: ForceField, tmp_path: Path) -> None:
    profile = _profile("butane")
    force_field = _with_bespoke_torsion(sage, profile, "bf-test-ccc", BUTANE_SMIRKS)
    work = tmp_path / "fb-timeout"

    result = run_forcebalance(
        force_field, ["bf-test-ccc"], [profile], ForceBalanceSettings(), work, timeout=4
    )

    assert not result.converged
    assert "timed out after 4 s" in result.message and "killed" in result.message
    assert result.seconds < 30
    assert result.work_directory == work.resolve() and (work / LOG_NAME).is_file()
    children = [" ".join(child.cmdline()) for child in psutil.Process().children(recursive=True)]
    assert not [cmdline for cmdline in children if RUNNER_MODULE in cmdline]
    assert _runner_processes(str(work)) == []


@pytest.mark.fast
def test_crash_message_from_log() -> None:
    """ForceBalance logs the reason and raises a bare exception; both reach the message."""
    log = "\n".join(
        [
            "#| Iteration 0 |#",
            "Tried to create Molecule object from a file that does not exist: scan.xyz",
            "Traceback (most recent call last):",
            '  File "molecule.py", line 1750, in load_frames',
            "    raise IOError",
            "OSError",
        ]
    )
    assert summarize_log(log).error == (
        "Tried to create Molecule object from a file that does not exist: scan.xyz (OSError)"
    )
    assert (
        summarize_log("Traceback (most recent call last):\n  x\nValueError: bad k").error
        == "ValueError: bad k"
    )
