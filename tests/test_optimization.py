"""The optimisation stage end to end: real drives on the embedded server, real ForceBalance."""

from __future__ import annotations

import json

import pytest
from openff.toolkit import ForceField

from bespoke_fractal.executor.drives import run_targets
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.optimization.stage import optimize_schema, profiles_from_results
from bespoke_fractal.schema.fits import OptimizationResult
from bespoke_fractal.workflow import BespokeWorkflowFactory

# rdkit MMFF94 profiles as the reference: fast, and different enough from Sage to need a fit
FACTORY = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 30})


@pytest.fixture(scope="module")
def drives(stage, am1_cache_directory):
    """Job descriptions and profiles of butane and biphenyl (drives computed once)."""
    made = {}

    def get(smiles: str):
        if smiles not in made:
            schema = FACTORY.optimization_schema_from_molecule(smiles, AM1BondOrderCache(am1_cache_directory))
            results = run_targets(stage, [schema], timeout=1200, progress=False)
            made[smiles] = schema, profiles_from_results(schema, results)
        return made[smiles]

    return get


def _check_output(result: OptimizationResult, schema) -> None:
    assert result.offxml is not None and result.offxml.is_file()
    force_field = ForceField(str(result.offxml))
    labels = force_field.label_molecules(schema.parent_molecule().to_topology())[0]["ProperTorsions"]
    for report in result.torsions:
        if report.kept_initial:
            continue
        for bond in report.parent_bonds:
            around = {key: p.id for key, p in labels.items() if {key[1], key[2]} == set(bond)}
            assert around, f"no torsions around {bond}"
            assert all(pid in report.parameter_ids for pid in around.values()), around
    bespoke = {p.id for p in labels.values() if p.id.startswith("bf-")}
    expected = {pid for r in result.torsions if not r.kept_initial for pid in r.parameter_ids}
    assert bespoke == expected
    report = json.loads((result.offxml.parent / "report.json").read_text())
    assert report["schema_id"] == schema.id
    for torsion in result.torsions:
        assert torsion.plot is not None and torsion.plot.stat().st_size > 10_000


@pytest.mark.parametrize("smiles", ["CCCC", "c1ccc(cc1)-c1ccccc1"])
def test_fit_lowers_error_against_qc(drives, smiles, tmp_path) -> None:
    schema, profiles = drives(smiles)
    result = optimize_schema(schema, profiles, tmp_path, timeout=900)
    assert result.converged, result.message
    assert result.iterations >= 1
    assert result.work_directory is None  # removed after a successful fit
    for torsion in result.torsions:
        assert torsion.relaxed_after.rmse < torsion.relaxed_before.rmse
        assert not torsion.worse and not torsion.kept_initial
        assert max(torsion.qc) > 0.5  # a real profile, kcal/mol
        if torsion.parent_before is not None:
            assert torsion.parent_after.rmse < torsion.parent_before.rmse + 0.5
    assert result.mean_rmse_after < result.mean_rmse_before
    _check_output(result, schema)


def test_fit_stopped_at_the_iteration_limit_keeps_what_improved(drives, tmp_path) -> None:
    """One ForceBalance step cannot converge; the parameters it reached are kept where they
    lower the relaxed-scan RMSE, and BespokeFit's discard-all behaviour is an option."""
    schema, profiles = drives("c1ccc(cc1)-c1ccccc1")
    short = schema.optimizer.model_copy(update={"max_iterations": 1})
    result = optimize_schema(schema.model_copy(update={"optimizer": short}), profiles, tmp_path / "keep")
    assert not result.converged
    assert "converg" in result.message.lower() and "\n" not in result.message
    assert "kept the last accepted parameters of 1 of 1" in result.message
    assert result.work_directory is not None and (result.work_directory / "optimize.in").is_file()
    [torsion] = result.torsions
    assert not torsion.kept_initial and torsion.relaxed_after.rmse < torsion.relaxed_before.rmse
    _check_output(result, schema)

    discard = short.model_copy(update={"discard_unconverged": True})
    result = optimize_schema(schema.model_copy(update={"optimizer": discard}), profiles, tmp_path / "discard")
    assert not result.converged and "no fitted parameters kept (discard_unconverged)" in result.message
    assert all(t.kept_initial for t in result.torsions)
    assert all(t.relaxed_after == t.relaxed_before for t in result.torsions)
    written = ForceField(str(result.offxml))
    labels = written.label_molecules(schema.parent_molecule().to_topology())[0]["ProperTorsions"]
    assert not [p for p in labels.values() if p.id.startswith("bf-")]
