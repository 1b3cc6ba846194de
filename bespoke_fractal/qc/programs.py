"""Per-program checks of the energies that come back from QCFractal.

One registered class per QC program. Each turns a drive's raw energies (as the QCFractal record
holds them) into verified Hartree values, whatever the program's qcengine harness did.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from openff.toolkit import Molecule
from pydantic import BaseModel

from bespoke_fractal.errors import TorsionDriveError
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.schema.units import KCAL_PER_HARTREE

KJ_PER_KCAL = 4.184


class EnergyCheck(BaseModel):
    """Factor applied to the record's energies, and why."""

    scale: float = 1.0
    note: str | None = None


class ProgramEnergyCheck:
    """Default: the harness reports Hartree; nothing to correct."""

    program: ClassVar[str] = ""

    def check(
        self, spec: QCSpec, molecule: Molecule, geometries: list[np.ndarray], energies: list[float]
    ) -> EnergyCheck:
        return EnergyCheck()


_REGISTRY: dict[str, ProgramEnergyCheck] = {}


def register(cls: type[ProgramEnergyCheck]) -> type[ProgramEnergyCheck]:
    _REGISTRY[cls.program] = cls()
    return cls


def energy_check_for(program: str) -> ProgramEnergyCheck:
    return _REGISTRY.get(program, ProgramEnergyCheck())


@register
class RDKitEnergyCheck(ProgramEnergyCheck):
    """Recompute each geometry's force-field energy with RDKit and match the record to it.

    qcengine 0.52's rdkit harness converts RDKit's kcal/mol with the kJ/mol factor, so its
    energies are 4.184 times too small. Records made by a fixed harness need no factor. The
    factor is decided from the data, never assumed, and anything else is an error.
    """

    program = "rdkit"
    candidates = (1.0, KJ_PER_KCAL)
    tolerance_kcal = 1e-3

    def check(
        self, spec: QCSpec, molecule: Molecule, geometries: list[np.ndarray], energies: list[float]
    ) -> EnergyCheck:
        direct = np.array([rdkit_energy_kcal(molecule, g, spec.method) for g in geometries])
        reported = np.array(energies) * KCAL_PER_HARTREE
        for scale in self.candidates:
            if np.max(np.abs(reported * scale - direct)) < self.tolerance_kcal:
                note = None
                if scale != 1.0:
                    note = (
                        f"rdkit harness energies were reported in the wrong unit; "
                        f"scaled by {scale} to match RDKit's own {spec.method.upper()} energies"
                    )
                return EnergyCheck(scale=scale, note=note)
        worst = float(np.max(np.abs(reported - direct)))
        raise TorsionDriveError(
            f"rdkit energies of this drive match RDKit's own {spec.method} energies with no "
            f"known unit factor (largest difference {worst:.3f} kcal/mol)"
        )


def rdkit_energy_kcal(molecule: Molecule, geometry_angstrom: np.ndarray, method: str) -> float:
    """RDKit's own force-field energy (kcal/mol) of ``molecule`` at a geometry in Å."""
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    rdmol = molecule.to_rdkit()
    rdmol.RemoveAllConformers()
    from rdkit import Chem

    conformer = Chem.Conformer(rdmol.GetNumAtoms())
    for index, (x, y, z) in enumerate(np.asarray(geometry_angstrom, dtype=float)):
        conformer.SetAtomPosition(index, Point3D(x, y, z))
    rdmol.AddConformer(conformer, assignId=True)
    method = method.lower()
    if method in ("mmff94", "mmff94s"):
        props = AllChem.MMFFGetMoleculeProperties(rdmol, mmffVariant=method.upper())
        force_field = AllChem.MMFFGetMoleculeForceField(rdmol, props)
    elif method == "uff":
        force_field = AllChem.UFFGetMoleculeForceField(rdmol)
    else:
        raise TorsionDriveError(f"RDKit has no force field called '{method}'")
    return float(force_field.CalcEnergy())
