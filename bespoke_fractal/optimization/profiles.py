"""MM torsion profiles on the QC geometries, and their errors against the QC profile.

Three protocols minimise the MM energy at each QC grid geometry (all start from it):

- ``relaxed`` (how the force field is used, and what geomeTRIC did on the QC side): only the
  driven dihedral is held, by a stiff harmonic term on that angle; every other coordinate is
  free. This is the protocol every score is judged by and, by default, the one fitted.
- ``frozen`` (ForceBalance's ``TorsionProfile`` target, and OpenFF BespokeFit's): the four atoms
  of the driven dihedral are frozen (zero mass) and every atom is restrained to its QC position
  by 0.5 k |r - r_QC|². Bond angles at the dihedral atoms cannot relax, which can flatter a fit.
- ``restrained``: the dihedral held as in ``relaxed``, heavy atoms restrained as in ``frozen``.

Energies leave the holding and restraining terms out. Partial charges are AM1-BCC from the
toolkit (AmberTools), computed once per molecule per process and passed to the force field, so
two force fields that differ only in torsions give MM profiles that differ only through them.

Alignment (one rule, everywhere a number or a curve is shown): QC relative to its minimum, MM
shifted by the mean MM − QC difference over the scored points (QC within ``energy_cutoff``), i.e.
the offset that minimises the RMSE. Points above the cutoff are not scored.
"""

from __future__ import annotations

import math
import threading
from typing import Literal

import numpy as np
import openmm
from openff.toolkit import ForceField, Molecule
from openff.units import unit
from openmm import unit as omm_unit
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.schema.fits import Dihedral, TorsionProfile

Mode = Literal["relaxed", "frozen", "restrained"]

KJ_PER_KCAL = 4.184
DIHEDRAL_K = 1.0e4
"""kJ/mol/rad² of the harmonic term that holds the driven dihedral (1° costs 1.5 kJ/mol)."""
MINIMISER_TOLERANCE = 1.0e-3
"""kJ/mol/nm: root-mean-square force at which OpenMM's L-BFGS minimiser stops."""

_SYSTEM_FORCES, _DIHEDRAL_GROUP, _POSITION_GROUP = 0, 1, 2
_charges: dict[str, np.ndarray] = {}
_charges_lock = threading.Lock()


class RelaxedPoint(BaseModel):
    """One restrained MM minimisation at a QC grid point."""

    model_config = ConfigDict(frozen=True)

    angle: float = Field(description="the QC grid angle, degrees")
    target_dihedral: float = Field(description="the dihedral of the QC geometry, degrees")
    dihedral: float = Field(description="the dihedral after minimisation, degrees")
    energy_kcal_mol: float = Field(description="MM energy without the restraints, kcal/mol (absolute)")
    heavy_atom_rmsd: float = Field(description="Å, minimised against the QC geometry")
    geometry_angstrom: list[list[float]]


# ---- charges ---------------------------------------------------------------------------------


def am1bcc_charges(mapped_smiles: str) -> np.ndarray:
    """AM1-BCC partial charges (e) of a molecule, in its mapped-SMILES atom order; cached."""
    with _charges_lock:
        if mapped_smiles not in _charges:
            from bespoke_fractal.schema.toolkits import toolkit_registry

            molecule = Molecule.from_mapped_smiles(mapped_smiles, allow_undefined_stereo=True)
            molecule.assign_partial_charges("am1bcc", toolkit_registry=toolkit_registry())
            _charges[mapped_smiles] = molecule.partial_charges.m_as(unit.elementary_charge).copy()
        return _charges[mapped_smiles].copy()


def _charged(molecule: Molecule) -> Molecule:
    charged = Molecule(molecule)
    charged.partial_charges = am1bcc_charges(molecule.to_smiles(mapped=True)) * unit.elementary_charge
    return charged


# ---- OpenMM ----------------------------------------------------------------------------------


def dihedral_hold(dihedral: Dihedral) -> openmm.CustomTorsionForce:
    """A stiff harmonic term on the angle of `dihedral` (target set by `hold_at`); the one
    definition of "the dihedral held", shared with the ForceBalance target that fits to it."""
    hold = openmm.CustomTorsionForce("0.5*k_hold*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - theta0)")
    hold.addGlobalParameter("k_hold", DIHEDRAL_K)
    hold.addGlobalParameter("pi", math.pi)
    hold.addPerTorsionParameter("theta0")
    hold.addTorsion(*(int(i) for i in dihedral), [0.0])
    return hold


def hold_at(hold: openmm.CustomTorsionForce, context: openmm.Context, degrees: float) -> None:
    """Move the target angle of a `dihedral_hold` term to `degrees`."""
    atoms = hold.getTorsionParameters(0)[:4]
    hold.setTorsionParameters(0, *atoms, [math.radians(degrees)])
    hold.updateParametersInContext(context)


def minimise(context: openmm.Context) -> None:
    """OpenMM's L-BFGS to an RMS force of MINIMISER_TOLERANCE, with no step limit."""
    openmm.LocalEnergyMinimizer.minimize(context, MINIMISER_TOLERANCE, 0)


class _Minimiser:
    """An OpenMM context of one molecule: its dihedral frozen (zero-mass atoms) or held (stiff
    torsion term), and `restrained` atoms pulled to reference positions."""

    def __init__(
        self,
        force_field: ForceField,
        molecule: Molecule,
        dihedral: Dihedral,
        restraint_k: float,
        restrained: list[int],
        freeze: bool,
    ):
        charged = _charged(molecule)
        system = force_field.create_openmm_system(charged.to_topology(), charge_from_molecules=[charged])
        for force in system.getForces():
            force.setForceGroup(_SYSTEM_FORCES)
        self.dihedral = dihedral
        self.hold = None
        if freeze:
            for index in dihedral:
                system.setParticleMass(index, 0.0)  # OpenMM's minimiser does not move massless atoms
        else:
            self.hold = dihedral_hold(dihedral)
            self.hold.setForceGroup(_DIHEDRAL_GROUP)
            system.addForce(self.hold)
        self.restrained = list(restrained) if restraint_k > 0 else []
        self.restraints = None
        if self.restrained:
            self.restraints = openmm.CustomExternalForce("0.5*k_pos*((x-x0)^2 + (y-y0)^2 + (z-z0)^2)")
            self.restraints.addGlobalParameter("k_pos", restraint_k * KJ_PER_KCAL * 100.0)  # kJ/mol/nm²
            for name in ("x0", "y0", "z0"):
                self.restraints.addPerParticleParameter(name)
            for index in self.restrained:
                self.restraints.addParticle(index, [0.0, 0.0, 0.0])
            self.restraints.setForceGroup(_POSITION_GROUP)
            system.addForce(self.restraints)
        self.context = openmm.Context(system, openmm.VerletIntegrator(0.001), *_platform())

    def minimise(self, geometry: np.ndarray, target_degrees: float) -> tuple[float, np.ndarray]:
        """(MM energy in kcal/mol without restraints, minimised geometry in Å), starting from and
        restrained to `geometry` (Å)."""
        if self.hold is not None:
            hold_at(self.hold, self.context, target_degrees)
        if self.restraints is not None:
            for slot, index in enumerate(self.restrained):
                self.restraints.setParticleParameters(slot, index, (geometry[index] / 10.0).tolist())
            self.restraints.updateParametersInContext(self.context)
        self.context.setPositions(geometry / 10.0)
        minimise(self.context)
        state = self.context.getState(getEnergy=True, getPositions=True, groups={_SYSTEM_FORCES})
        energy = state.getPotentialEnergy().value_in_unit(omm_unit.kilocalorie_per_mole)
        positions = state.getPositions(asNumpy=True).value_in_unit(omm_unit.angstrom)
        return float(energy), np.asarray(positions)


def _platform() -> tuple[openmm.Platform, dict[str, str]]:
    try:
        return openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"}
    except openmm.OpenMMException:
        return openmm.Platform.getPlatformByName("Reference"), {}


def dihedral_degrees(geometry: np.ndarray, dihedral: Dihedral) -> float:
    """The dihedral angle of four atoms of `geometry` (Å), degrees in (-180, 180]."""
    p0, p1, p2, p3 = (np.asarray(geometry[i], dtype=float) for i in dihedral)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


# ---- profiles --------------------------------------------------------------------------------


def relax_profile(
    force_field: ForceField, profile: TorsionProfile, restraint_k: float = 1.0, mode: Mode = "relaxed"
) -> list[RelaxedPoint]:
    """MM minimisation at every QC geometry of `profile` (`mode` as in the module docstring;
    restraint_k in kcal/mol/Å², used by ``frozen`` and ``restrained`` only)."""
    molecule = Molecule.from_mapped_smiles(profile.mapped_smiles, allow_undefined_stereo=True)
    heavy = [atom.molecule_atom_index for atom in molecule.atoms if atom.atomic_number > 1]
    if mode == "relaxed":
        restrained, freeze, restraint_k = [], False, 0.0
    elif mode == "frozen":
        restrained, freeze = list(range(molecule.n_atoms)), True
    elif mode == "restrained":
        restrained, freeze = heavy, False
    else:
        raise ValueError(f"unknown mode {mode!r} (relaxed, frozen or restrained)")
    minimiser = _Minimiser(force_field, molecule, profile.dihedral, restraint_k, restrained, freeze)
    points = []
    for angle, geometry in zip(profile.angles, profile.geometries_angstrom, strict=True):
        start = np.asarray(geometry, dtype=float)
        target = dihedral_degrees(start, profile.dihedral)
        energy, relaxed = minimiser.minimise(start, target)
        deviation = np.sum((relaxed[heavy] - start[heavy]) ** 2, axis=1)
        points.append(
            RelaxedPoint(
                angle=angle,
                target_dihedral=target,
                dihedral=dihedral_degrees(relaxed, profile.dihedral),
                energy_kcal_mol=energy,
                heavy_atom_rmsd=float(np.sqrt(np.mean(deviation))),
                geometry_angstrom=relaxed.tolist(),
            )
        )
    return points


def mm_profile(
    force_field: ForceField, profile: TorsionProfile, restraint_k: float = 1.0, mode: Mode = "relaxed"
) -> list[float]:
    """MM energies (kcal/mol, relative to the lowest) at the QC grid points of `profile`, each
    after a minimisation from the QC geometry by protocol `mode`."""
    points = relax_profile(force_field, profile, restraint_k, mode)
    energies = np.array([point.energy_kcal_mol for point in points])
    return (energies - energies.min()).tolist()


def parent_profile(
    force_field: ForceField, parent: Molecule, dihedral: Dihedral, angles: list[int] | list[float]
) -> list[float]:
    """A relaxed MM torsion scan of the whole parent (kcal/mol, relative to the lowest).

    There are no QC geometries of the parent here: one RDKit conformer (fixed seed) is rotated
    to each angle and minimised with only the dihedral held (no restraints).
    """
    from rdkit.Chem import AllChem, rdMolTransforms

    rdmol = parent.to_rdkit()
    if AllChem.EmbedMolecule(rdmol, randomSeed=0x5EED) != 0:
        raise ValueError(f"RDKit cannot embed {parent.to_smiles(explicit_hydrogens=False)}")
    minimiser = _Minimiser(force_field, parent, dihedral, 0.0, restrained=[], freeze=False)
    energies = []
    for angle in angles:
        conformer = rdmol.GetConformer()
        rdMolTransforms.SetDihedralDeg(conformer, *(int(i) for i in dihedral), float(angle))
        energy, _ = minimiser.minimise(np.asarray(conformer.GetPositions()), float(angle))
        energies.append(energy)
    values = np.asarray(energies)
    return (values - values.min()).tolist()


def scored_points(qc: list[float], energy_cutoff: float | None = None) -> np.ndarray:
    """Which grid points are scored: QC (relative to its minimum) within `energy_cutoff`."""
    qc_values = np.asarray(qc, dtype=float)
    qc_values = qc_values - qc_values.min()
    if energy_cutoff is None:
        return np.ones_like(qc_values, dtype=bool)
    return qc_values <= energy_cutoff


def aligned(qc: list[float], mm: list[float], energy_cutoff: float | None = None) -> list[float]:
    """`mm` shifted as it is scored: by the mean MM − QC difference over the scored points, QC
    being relative to its minimum (the module docstring's alignment rule)."""
    qc_values, mm_values = np.asarray(qc, dtype=float), np.asarray(mm, dtype=float)
    if qc_values.shape != mm_values.shape or qc_values.size == 0:
        raise ValueError(f"profiles differ in length or are empty ({qc_values.size} QC, {mm_values.size} MM)")
    qc_values = qc_values - qc_values.min()
    keep = scored_points(qc, energy_cutoff)
    return (mm_values - float(np.mean((mm_values - qc_values)[keep]))).tolist()


def profile_errors(
    qc: list[float], mm: list[float], energy_cutoff: float | None = None
) -> tuple[float, float]:
    """(RMSE, largest |MM − QC|) in kcal/mol over the scored points, unweighted, after the
    module's alignment (mean offset removed; points with QC above `energy_cutoff` left out)."""
    shifted = np.asarray(aligned(qc, mm, energy_cutoff))
    qc_values = np.asarray(qc, dtype=float)
    errors = (shifted - (qc_values - qc_values.min()))[scored_points(qc, energy_cutoff)]
    return float(np.sqrt(np.mean(errors**2))), float(np.max(np.abs(errors)))
