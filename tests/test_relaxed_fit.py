"""Fits judged the way the force field is used: relaxed MM scans (only the dihedral held).

A real RDKit MMFF94 drive of acetanilide (an amide and an aniline-type N-aryl bond) on the
session's server and a real ForceBalance fit; the scores the project reports are then recomputed
by an independent route from the written force field and the server's records: Interchange ->
OpenMM, charges assigned here by the toolkit, the dihedral held by a differently written
restraint (k (1 - cos(theta - theta0))), OpenMM's minimiser, RMSE after removing the mean offset.
"""

from __future__ import annotations

import csv

import numpy as np
import openmm
import pytest
from openff.interchange import Interchange
from openff.toolkit import ForceField, Molecule
from openff.toolkit.utils.toolkits import AmberToolsToolkitWrapper
from openmm import unit as omm_unit

from bespoke_fractal.executor.drives import run_targets
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.optimization.stage import optimize_schema, profiles_from_results
from bespoke_fractal.workflow import BespokeWorkflowFactory

FACTORY = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 30})
SMILES = "CC(=O)Nc1ccccc1"  # acetanilide


@pytest.fixture(scope="module")
def acetanilide(stage, am1_cache_directory):
    schema = FACTORY.optimization_schema_from_molecule(SMILES, AM1BondOrderCache(am1_cache_directory))
    results = run_targets(stage, [schema], timeout=1200, progress=False)
    return schema, profiles_from_results(schema, results)


@pytest.fixture(scope="module")
def fitted(acetanilide, tmp_path_factory):
    schema, profiles = acetanilide
    return optimize_schema(schema, profiles, tmp_path_factory.mktemp("relaxed-fit"), timeout=900)


def _independent_relaxed_scan(offxml: str, profile) -> list[float]:
    """MM energy (kcal/mol) at each QC geometry after a minimisation with only the dihedral held."""
    molecule = Molecule.from_mapped_smiles(profile.mapped_smiles, allow_undefined_stereo=True)
    molecule.assign_partial_charges("am1bcc", toolkit_registry=AmberToolsToolkitWrapper())
    force_field = ForceField(offxml, load_plugins=False)
    system = Interchange.from_smirnoff(
        force_field, molecule.to_topology(), charge_from_molecules=[molecule]
    ).to_openmm_system()
    hold = openmm.CustomTorsionForce("k_hold*(1 - cos(theta - theta0))")
    hold.addGlobalParameter("k_hold", 2.0e4)  # kJ/mol; ~1e4 kJ/mol/rad^2 near the minimum
    hold.addPerTorsionParameter("theta0")
    hold.addTorsion(*profile.dihedral, [0.0])
    hold.setForceGroup(31)
    system.addForce(hold)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    energies = []
    for geometry in profile.geometries_angstrom:
        xyz = np.asarray(geometry)
        a, b, c, d = (xyz[i] for i in profile.dihedral)
        b1, b2, b3 = b - a, c - b, d - c
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        theta = np.arctan2(np.dot(np.cross(n1, n2), b2 / np.linalg.norm(b2)), np.dot(n1, n2))
        hold.setTorsionParameters(0, *profile.dihedral, [float(theta)])
        hold.updateParametersInContext(context)
        context.setPositions(xyz * 0.1)
        openmm.LocalEnergyMinimizer.minimize(context, 1e-4, 0)
        state = context.getState(getEnergy=True, groups=set(range(31)))
        energies.append(state.getPotentialEnergy().value_in_unit(omm_unit.kilocalorie_per_mole))
    return energies


def _rmse(qc: list[float], mm: list[float], cutoff: float) -> float:
    qc_values, mm_values = np.asarray(qc) - min(qc), np.asarray(mm)
    keep = qc_values <= cutoff
    difference = (mm_values - qc_values)[keep]
    return float(np.sqrt(np.mean((difference - difference.mean()) ** 2)))


def test_relaxed_scan_rmse_falls_and_is_reproduced_independently(acetanilide, fitted) -> None:
    schema, profiles = acetanilide
    assert fitted.converged, fitted.message
    assert len(fitted.torsions) == 2  # the amide C(=O)-N and the N-aryl bond
    cutoff = schema.optimizer.target.energy_cutoff
    base = ForceField(schema.initial_force_field, load_plugins=False).to_string()
    written = fitted.offxml.read_text()
    for torsion, profile in zip(fitted.torsions, profiles, strict=True):
        assert torsion.target_index == profile.target_index
        assert torsion.relaxed_after.rmse < torsion.relaxed_before.rmse, torsion
        assert not torsion.kept_initial and not torsion.worse
        for offxml, reported in ((base, torsion.relaxed_before), (written, torsion.relaxed_after)):
            independent = _rmse(profile.energies_kcal_mol, _independent_relaxed_scan(offxml, profile), cutoff)
            assert independent == pytest.approx(reported.rmse, abs=0.02), (torsion.target_index, offxml[:40])
        # both protocols are reported, and the scored points are the ones within the cutoff
        assert torsion.frozen_before.rmse > 0 and torsion.frozen_after.rmse >= 0
        assert torsion.scored_points == sum(e - min(torsion.qc) <= cutoff for e in torsion.qc)
        assert torsion.qc_barrier == pytest.approx(max(torsion.qc) - min(torsion.qc))
    assert fitted.mean_rmse_after < fitted.mean_rmse_before


def test_reports_and_tables_show_both_protocols(fitted, tmp_path) -> None:
    from datetime import datetime

    from bespoke_fractal.executor.models import BespokeExecutorOutput, BespokeStageOutput
    from bespoke_fractal.executor.output import write_job_output

    output = BespokeExecutorOutput(
        id="1",
        name="acetanilide",
        smiles=fitted.smiles,
        status="success",
        stages=[BespokeStageOutput(type="optimization", status="success")],
        results=fitted,
        offxml=fitted.offxml.read_text(),
        created_at=datetime.now(),
    )
    write_job_output(output, tmp_path)
    with (tmp_path / "rmse.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(fitted.torsions)
    for row, t in zip(rows, fitted.torsions, strict=True):
        assert float(row["relaxed_rmse_before_kcal_mol"]) == pytest.approx(t.relaxed_before.rmse, abs=1e-3)
        assert float(row["relaxed_rmse_after_kcal_mol"]) == pytest.approx(t.relaxed_after.rmse, abs=1e-3)
        assert float(row["frozen_rmse_after_kcal_mol"]) == pytest.approx(t.frozen_after.rmse, abs=1e-3)
        assert row["parent_relaxed_rmse_before_kcal_mol"] == ""  # the parent was not driven
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(fitted.torsions)
