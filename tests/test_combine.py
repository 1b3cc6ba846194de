"""`combine`: one force field for a series, every molecule's torsions checked against its own fit."""

from __future__ import annotations

import json

import pytest
from openff.toolkit import ForceField, Molecule
from openff.units import unit

from bespoke_fractal.optimization.combine import CombineError, CombineJob, CombineTorsion, combine_jobs

BASE = "openff_unconstrained-2.2.1.offxml"
ACETANILIDE = "CC(=O)Nc1ccccc1"
P_METHYL = "CC(=O)Nc1ccc(C)cc1"
# C(=O)-N-C(aryl):C(aryl): matches the anilide N-aryl bond of both molecules
GENERIC = "[#6X3:1](=[#8])-[#7X3:2]-[#6X3;a:3]:[#6X3;a:4]"


def _job(job_id: str, smiles: str, smirks: str, k: float, drive: str) -> CombineJob:
    """A made-up fitted job: the base force field plus one bespoke torsion on the N-aryl bond."""
    molecule = Molecule.from_smiles(smiles)
    force_field = ForceField(BASE, load_plugins=False)
    force_field.get_parameter_handler("ProperTorsions").add_parameter(
        {
            "smirks": smirks,
            "id": "bf-t0-N3-C4-q0",
            "periodicity": [1, 2],
            "phase": [0.0 * unit.degree, 180.0 * unit.degree],
            "k": [k * unit.kilocalorie_per_mole, 0.5 * k * unit.kilocalorie_per_mole],
            "idivf": [1.0, 1.0],
        }
    )
    bond = next(
        (b.atom1_index, b.atom2_index)
        for b in molecule.bonds
        if {b.atom1.symbol, b.atom2.symbol} == {"N", "C"} and (b.atom1.is_aromatic or b.atom2.is_aromatic)
    )
    return CombineJob(
        id=job_id,
        name=smiles,
        smiles=molecule.to_smiles(mapped=True),
        offxml=force_field.to_string(),
        torsions=[
            CombineTorsion(
                target_index=0, parent_bonds=[bond], parameter_ids=["bf-t0-N3-C4-q0"], drive_key=drive
            )
        ],
    )


def _values(force_field: ForceField, smiles: str) -> dict:
    molecule = Molecule.from_mapped_smiles(smiles)
    labels = force_field.label_molecules(molecule.to_topology())[0]["ProperTorsions"]
    return {
        tuple(sorted([key, key[::-1]])[0]): (
            [int(n) for n in p.periodicity],
            [round(k.m_as(unit.kilocalorie_per_mole), 8) for k in p.k],
        )
        for key, p in labels.items()
    }


@pytest.mark.fast
def test_generic_smirks_of_another_drive_is_made_specific(tmp_path):
    jobs = [_job("1", ACETANILIDE, GENERIC, 2.0, "drive-a"), _job("2", P_METHYL, GENERIC, 3.0, "drive-b")]
    # appended naively, job 1's SMIRKS (the last match) would take job 2's N-aryl torsions
    naive = ForceField(jobs[1].offxml, load_plugins=False)
    naive.get_parameter_handler("ProperTorsions").parameters[-1].k = [
        2.0 * unit.kilocalorie_per_mole,
        1.0 * unit.kilocalorie_per_mole,
    ]
    assert _values(naive, jobs[1].smiles) != _values(ForceField(jobs[1].offxml), jobs[1].smiles)

    output = tmp_path / "series.offxml"
    force_field, report = combine_jobs(jobs, output, scan="none")
    for job in jobs:  # every torsion of every molecule as its own fit gave it
        assert _values(force_field, job.smiles) == _values(ForceField(job.offxml), job.smiles)
    assert set(report.id_map.values()) == {"j1-bf-t0-N3-C4-q0", "j2-bf-t0-N3-C4-q0"}
    assert report.actions and "captures torsion" in report.actions[0]
    first, second = report.molecules
    assert first.torsions[0].action == "made specific" and second.torsions[0].action == "kept"
    assert first.identical and second.identical
    reloaded = ForceField(str(output), load_plugins=False)
    for job in jobs:
        molecule = Molecule.from_mapped_smiles(job.smiles)
        molecule.assign_partial_charges("gasteiger")
        reloaded.create_openmm_system(molecule.to_topology(), charge_from_molecules=[molecule])
    assert json.loads(output.with_name("series.combine.json").read_text())["rounds"] == report.rounds


@pytest.mark.fast
def test_same_drive_gets_one_parameter():
    jobs = [_job("1", ACETANILIDE, GENERIC, 2.0, "drive-a"), _job("2", P_METHYL, GENERIC, 3.0, "drive-a")]
    force_field, report = combine_jobs(jobs, scan="none")
    bespoke = [
        p for p in force_field.get_parameter_handler("ProperTorsions").parameters if p.id.startswith("j")
    ]
    assert [p.id for p in bespoke] == ["j1-bf-t0-N3-C4-q0"]  # the earliest job's fit, once
    assert report.removed == {"2:bf-t0-N3-C4-q0": "wins no torsion of the series (superseded)"}
    second = report.molecules[1]
    assert second.torsions[0].action == "shared" and not second.identical
    assert "j1-bf-t0-N3-C4-q0" in second.torsions[0].combined_ids  # (H-N-C:C keep the base's)
    assert not any(i.startswith("j2-") for i in second.torsions[0].combined_ids)


@pytest.mark.fast
def test_different_initial_force_fields_are_refused(tmp_path):
    other = _job("2", P_METHYL, GENERIC, 3.0, "drive-b")
    other = other.model_copy(update={"offxml": other.offxml.replace('k="', 'k="1', 1)})
    with pytest.raises(CombineError, match="different initial force fields"):
        combine_jobs([_job("1", ACETANILIDE, GENERIC, 2.0, "drive-a"), other], tmp_path / "x.offxml")
    assert not (tmp_path / "x.offxml").exists()


@pytest.mark.fast
def test_identical_molecules_with_different_fits_cannot_be_combined(tmp_path):
    jobs = [_job("1", ACETANILIDE, GENERIC, 2.0, "drive-a"), _job("2", ACETANILIDE, GENERIC, 3.0, "drive-b")]
    with pytest.raises(CombineError, match="no SMIRKS of its own molecule tells them apart"):
        combine_jobs(jobs, tmp_path / "x.offxml", scan="none")
    assert not list(tmp_path.iterdir())


# -- a real series on the session's server ----------------------------------------------------------
# the anilide N-aryl bond only, MMFF94 drives at 60 degrees. Acetanilide, propananilide and
# 4-fluoroacetanilide have one Pfizer fragment (acetanilide) for it, so one drive; the 2-naphthyl
# amide has its own drive, and its bespoke SMIRKS and acetanilide's match each other's torsions
SERIES = {
    "acetanilide": "CC(=O)Nc1ccccc1",
    "propananilide": "CCC(=O)Nc1ccccc1",
    "fluoroacetanilide": "CC(=O)Nc1ccc(F)cc1",
    "naphthylacetamide": "CC(=O)Nc1ccc2ccccc2c1",
}
SERIES_WORKFLOW = {
    "qc_spec.grid_spacing": 60,
    "fragmentation_engine": "Pfizer",
    "target_torsion_smirks": ["[#7X3:1]-!@[c:2]"],
}


@pytest.fixture(scope="module")
def series(embedded_server, managers, tmp_path_factory):
    """The series fitted by an executor on the session's server, then combined."""
    from bespoke_fractal.executor import BespokeExecutor, wait_until_complete
    from bespoke_fractal.workflow import BespokeWorkflowFactory

    factory = BespokeWorkflowFactory.from_preset("debug", **SERIES_WORKFLOW)
    executor = BespokeExecutor(
        n_qc_compute_workers=0,  # the session's managers serve this server
        n_optimizer_workers=2,
        directory=embedded_server.directory,
        poll_interval=1.0,
    )
    with executor:
        ids = {name: executor.submit(smiles, factory, name=name) for name, smiles in SERIES.items()}
        outputs = {name: wait_until_complete(i, frequency=1, timeout=1500) for name, i in ids.items()}
        assert all(o.status == "success" for o in outputs.values()), [o.error for o in outputs.values()]
        directory = tmp_path_factory.mktemp("combine")
        output = directory / "series.offxml"
        report = executor.combine(list(ids.values()), output, scan="all")
    return {"ids": ids, "outputs": outputs, "report": report, "path": output, "directory": directory}


def test_series_shares_one_drive_and_resolves_the_conflict(series):
    ids, report = series["ids"], series["report"]
    force_field = ForceField(str(series["path"]), load_plugins=False)
    by_name = {m.name: m for m in report.molecules}
    first = f"j{ids['acetanilide']}-"
    # the shared drive: propananilide and fluoroacetanilide get acetanilide's parameters, which
    # exist once; their own near-duplicates are gone
    bespoke = [p.id for p in force_field.get_parameter_handler("ProperTorsions").parameters if p.id[0] == "j"]
    assert len(bespoke) == len(set(bespoke))
    for name in ("propananilide", "fluoroacetanilide"):
        torsion = by_name[name].torsions[0]
        assert torsion.action == "shared", torsion
        assert torsion.combined_ids and all(i.startswith(first) for i in torsion.combined_ids)
        assert not any(i.startswith(f"j{ids[name]}-") for i in bespoke)
    # acetanilide and the naphthyl amide keep every torsion exactly as their own fits gave them
    for name in ("acetanilide", "naphthylacetamide"):
        job = series["outputs"][name]
        assert by_name[name].identical
        assert _values(force_field, job.smiles) == _values(ForceField(job.offxml), job.smiles)
        assert all(i.startswith(f"j{ids[name]}-") for i in by_name[name].torsions[0].combined_ids)
    # the conflict was found and resolved, not overwritten: acetanilide's SMIRKS matched the
    # naphthyl amide's N-aryl torsions (as the library's matches show) and was made specific
    assert any("captures torsion" in action and "naphthylacetamide" in action for action in report.actions)
    assert by_name["acetanilide"].torsions[0].action == "made specific"
    # the combined force field parametrises every molecule
    for job in series["outputs"].values():
        molecule = Molecule.from_mapped_smiles(job.smiles)
        molecule.assign_partial_charges("gasteiger")
        force_field.create_openmm_system(molecule.to_topology(), charge_from_molecules=[molecule])


def test_series_rmse_is_reproducible(series):
    from bespoke_fractal.optimization.profiles import parent_profile, profile_errors

    report, outputs = series["report"], series["outputs"]
    force_field = ForceField(str(series["path"]), load_plugins=False)
    for molecule in report.molecules:
        torsion = molecule.torsions[0]
        assert torsion.scanned and torsion.rmse_own is not None and torsion.rmse_combined is not None
        if molecule.identical:
            assert torsion.rmse_combined == pytest.approx(torsion.rmse_own, abs=1e-6)
    # recomputed independently: a shared torsion with the combined force field
    shared = next(m for m in report.molecules if m.name == "propananilide")
    fit = outputs["propananilide"].results.torsions[0]
    parent = Molecule.from_mapped_smiles(shared.smiles)
    mm = parent_profile(force_field, parent, shared.torsions[0].dihedral, fit.angles)
    assert profile_errors(fit.qc, mm, 10.0)[0] == pytest.approx(shared.torsions[0].rmse_combined, abs=1e-6)
    # the own-force-field number is the fit report's parent_after (the same scan, stage.py)
    first = next(m for m in report.molecules if m.name == "acetanilide")
    own = outputs["acetanilide"].results.torsions[0].parent_after
    assert own is not None and own.rmse == pytest.approx(first.torsions[0].rmse_own, abs=1e-3)


def test_cli_combines_written_jobs(series, tmp_path):
    from helpers import invoke

    from bespoke_fractal.executor.output import write_job_output

    files = []
    for name, output in series["outputs"].items():
        files += ["--ff", str(write_job_output(output, tmp_path / name)[1])]
    result = invoke("executor", "combine", "--output", str(tmp_path / "ff.offxml"), *files)
    assert result.exit_code == 0, result.output
    assert "combined force field" in result.output and (tmp_path / "ff.combine.json").is_file()
    ForceField(str(tmp_path / "ff.offxml"), load_plugins=False)
    lone = tmp_path / "lone" / "force-field.offxml"  # no result.json beside it
    lone.parent.mkdir()
    lone.write_text((tmp_path / "ff.offxml").read_text())
    missing = invoke("executor", "combine", "--output", str(tmp_path / "x.offxml"), "--ff", str(lone))
    assert missing.exit_code == 1 and "result.json" in missing.output
    assert not (tmp_path / "x.offxml").exists()
