"""MM torsion profiles on QC geometries (real MMFF94 reference profiles), their errors, and plots."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import numpy as np
import openmm
import pytest
from openff.interchange import Interchange
from openff.toolkit import ForceField, Molecule
from openff.units import unit
from openmm import unit as omm_unit

from bespoke_fractal.forcefield import load_force_field
from bespoke_fractal.optimization.plots import plot_profile
from bespoke_fractal.optimization.profiles import (
    aligned,
    am1bcc_charges,
    dihedral_degrees,
    mm_profile,
    profile_errors,
    relax_profile,
)
from bespoke_fractal.optimization.smirks import add_bespoke_torsions, bespoke_torsions
from bespoke_fractal.schema.fits import TorsionProfile
from bespoke_fractal.workflow import BespokeWorkflowFactory

pytestmark = pytest.mark.fast  # the fast tier: pytest -m fast

DATA = Path(__file__).parent / "data"


def _profile(name: str) -> TorsionProfile:
    """An rdkit MMFF94 torsion drive on a 30° grid (made by tests/data/make_profile.py)."""
    return TorsionProfile.model_validate_json((DATA / f"{name}_mmff94_30.json").read_text())


@pytest.fixture(scope="module")
def sage() -> ForceField:
    return load_force_field("openff_unconstrained-2.2.1.offxml")


@pytest.fixture(scope="module")
def butane_points(sage):
    return relax_profile(sage, _profile("butane"), mode="frozen")


def test_sage_butane_against_mmff94(sage, butane_points) -> None:
    profile = _profile("butane")
    mm = mm_profile(sage, profile, mode="frozen")
    assert min(mm) == 0.0 and len(mm) == len(profile.angles)
    assert mm == pytest.approx(
        [p.energy_kcal_mol - min(q.energy_kcal_mol for q in butane_points) for p in butane_points]
    )
    rmse, largest = profile_errors(profile.energies_kcal_mol, mm)
    assert 0.05 < rmse < 2.0
    assert rmse <= largest < 3.0
    syn = mm[profile.angles.index(0)]
    assert 3.0 < syn < 8.0
    anti = mm[profile.angles.index(180)]
    assert anti < 0.5


@pytest.mark.parametrize("mode", ["frozen", "restrained", "relaxed"])
def test_minimisation_holds_the_dihedral_and_stays_near_the_qc_geometry(sage, mode) -> None:
    profile = _profile("butane")
    points = relax_profile(sage, profile, mode=mode)
    for point, geometry in zip(points, profile.geometries_angstrom, strict=True):
        start = np.asarray(geometry)
        assert point.target_dihedral == pytest.approx(dihedral_degrees(start, profile.dihedral))
        deviation = (point.dihedral - point.target_dihedral + 180.0) % 360.0 - 180.0
        assert abs(deviation) < (1e-6 if mode == "frozen" else 1.0)
        assert abs((point.target_dihedral - point.angle + 180.0) % 360.0 - 180.0) < 1.0
        assert point.heavy_atom_rmsd < 0.3
        moved = np.linalg.norm(np.asarray(point.geometry_angstrom) - start, axis=1)
        assert moved.max() > 1e-3  # it did minimise
        if mode == "frozen":  # the dihedral atoms are frozen
            assert moved[list(profile.dihedral)].max() < 1e-6


def test_frozen_mode_keeps_eclipsed_geometries_higher(sage) -> None:
    """Frozen dihedral atoms keep the QC bond angles; holding only the angle lets them relax,
    and with nothing restrained the relaxed scan is lowest of all."""
    profile = _profile("butane")
    frozen = mm_profile(sage, profile, mode="frozen")
    held = mm_profile(sage, profile, mode="restrained")
    relaxed = mm_profile(sage, profile, mode="relaxed")
    syn = profile.angles.index(0)
    assert frozen[syn] > held[syn] + 0.1
    assert relaxed[syn] <= held[syn] + 1e-3
    with pytest.raises(ValueError, match="unknown mode"):
        relax_profile(sage, profile, mode="forcebalance")


def _openmm_energy_kcal_mol(force_field: ForceField, molecule: Molecule, geometry_angstrom) -> float:
    """Single-point energy by a separate route: Interchange -> OpenMM Reference platform."""
    charged = Molecule(molecule)
    charged.partial_charges = am1bcc_charges(molecule.to_smiles(mapped=True)) * unit.elementary_charge
    interchange = Interchange.from_smirnoff(
        force_field, charged.to_topology(), charge_from_molecules=[charged]
    )
    system = interchange.to_openmm_system()
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(np.asarray(geometry_angstrom) * 0.1)
    energy = context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(omm_unit.kilojoule_per_mole) / 4.184


def test_energies_are_kcal_mol(sage, butane_points) -> None:
    molecule = _profile("butane").molecule()
    syn = next(p for p in butane_points if p.angle == 0)
    anti = next(p for p in butane_points if p.angle == 180)
    for point in (syn, anti):
        independent = _openmm_energy_kcal_mol(sage, molecule, point.geometry_angstrom)
        assert point.energy_kcal_mol == pytest.approx(independent, abs=0.01)
    difference = _openmm_energy_kcal_mol(sage, molecule, syn.geometry_angstrom) - _openmm_energy_kcal_mol(
        sage, molecule, anti.geometry_angstrom
    )
    assert syn.energy_kcal_mol - anti.energy_kcal_mol == pytest.approx(difference, abs=0.01)


def test_charges_are_computed_once() -> None:
    smiles = _profile("butane").mapped_smiles
    first = am1bcc_charges(smiles)
    start = time.perf_counter()
    second = am1bcc_charges(smiles)
    assert time.perf_counter() - start < 0.01
    assert np.array_equal(first, second)
    assert abs(first.sum()) < 1e-6


def test_expanded_bespoke_copy_of_sage_gives_the_same_profile(sage, am1_cache_directory) -> None:
    """Bespoke parameters with Sage's own k (periodicities 1-4) leave the MM profile unchanged,
    and the profile sees the bespoke parameters at all (zeroing them changes it)."""
    from bespoke_fractal.fragmentation import AM1BondOrderCache

    factory = BespokeWorkflowFactory.from_preset("debug").with_changes({"fragmentation_engine": "Pfizer"})
    schema = factory.optimization_schema_from_molecule("CCCC", AM1BondOrderCache(am1_cache_directory))
    torsions = bespoke_torsions(schema, sage)
    profile = _profile("butane")
    initial = mm_profile(sage, profile)
    assert mm_profile(add_bespoke_torsions(sage, torsions), profile) == pytest.approx(initial, abs=2e-3)
    zeroed = [t.model_copy(update={"k": [0.0] * len(t.k)}) for t in torsions]
    changed = mm_profile(add_bespoke_torsions(sage, zeroed), profile)
    assert max(abs(a - b) for a, b in zip(changed, initial, strict=True)) > 0.5


def test_profile_errors_remove_the_mean_offset() -> None:
    # MM is shifted by its mean difference from QC (QC relative to its minimum)
    assert profile_errors([0.0, 1.0, 2.0], [5.0, 6.0, 7.0]) == pytest.approx((0.0, 0.0))
    rmse, largest = profile_errors([0.0, 2.0, 1.0], [1.0, 0.0, 3.0])  # MM - QC: 1, -2, 2; mean 1/3
    assert rmse == pytest.approx(np.sqrt(((2 / 3) ** 2 + (7 / 3) ** 2 + (5 / 3) ** 2) / 3))
    assert largest == pytest.approx(7 / 3)
    assert aligned([0.0, 2.0, 1.0], [1.0, 0.0, 3.0]) == pytest.approx([2 / 3, -1 / 3, 8 / 3])
    # points above the cutoff (QC energy relative to its minimum) are left out, offset included
    assert profile_errors([1.0, 3.0, 21.0], [0.0, 2.0, 0.0], energy_cutoff=10.0) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError, match="differ in length"):
        profile_errors([0.0, 1.0], [0.0])


def test_plot_is_a_png(tmp_path: Path, sage, butane_points) -> None:
    profile = _profile("butane")
    initial = [p.energy_kcal_mol for p in butane_points]
    fitted = list(profile.energies_kcal_mol)
    path = plot_profile(
        tmp_path / "plots" / "t0.png", profile.angles, profile.energies_kcal_mol, initial, fitted, "butane"
    )
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 300 and height > 200
    assert len(data) > 10_000
