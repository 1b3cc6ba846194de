"""RDKit force fields (MMFF94, UFF) through qcengine's ``rdkit`` harness.

qcengine <= 0.52 reports this harness's results in the wrong units; task processes of this
project's managers fix that (:func:`fix_rdkit_units`), and every drive's energies are checked
against RDKit's own when read (:meth:`RDKit.check_energies`), whoever computed them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bespoke_fractal.errors import TorsionDriveError
from bespoke_fractal.qc.programs.base import (
    EnergyCheck,
    QCProgram,
    RecordedCost,
    register_program,
    wrap_method,
)
from bespoke_fractal.schema.units import KCAL_PER_HARTREE

if TYPE_CHECKING:
    from openff.toolkit import Molecule

    from bespoke_fractal.schema.qc import QCSpec

KJ_PER_KCAL = 4.184


def _rdkit_uses_kj() -> bool:
    from qcengine.programs.rdkit import RDKitHarness

    return '"kJ / mol"' in inspect.getsource(RDKitHarness.compute)


def fix_rdkit_units() -> bool:
    """qcengine <= 0.52 converts RDKit's MMFF94/UFF results to atomic units with two slips:
    energies (kcal/mol) with the kJ/mol factor, 4.184x too small, and gradients (kcal/mol/Å)
    with the kJ/mol factor and Å->bohr where bohr->Å is due, 1.17x too small and 3.57x too
    large for the energies they come with. geomeTRIC then steps on a model that overestimates
    every energy change 3.57x (step quality ~0.28) and crawls or stalls on constrained
    optimisations. This patch makes both right. Returns True when it patched."""
    try:
        from qcengine.programs.rdkit import RDKitHarness
        from qcengine.units import ureg

        if not _rdkit_uses_kj():
            return False
    except (ImportError, OSError, TypeError):
        return False
    energy_scale = KJ_PER_KCAL
    gradient_scale = KJ_PER_KCAL / ureg.conversion_factor("angstrom", "bohr") ** 2

    def fixed(original: Any) -> Any:
        def compute(self: Any, input_data: Any, config: Any) -> Any:
            result = original(self, input_data, config)
            gradient = result.properties.return_gradient
            properties = result.properties.model_copy(
                update={
                    "return_energy": result.properties.return_energy * energy_scale,
                    "return_gradient": None if gradient is None else gradient * gradient_scale,
                }
            )
            specification = getattr(input_data, "specification", input_data)  # qcschema v2 or v1
            driver = str(getattr(specification.driver, "value", specification.driver))
            scale = gradient_scale if driver == "gradient" else energy_scale
            extras = {**(result.extras or {}), "bespoke_fractal_fix": "rdkit units"}
            update = {
                "properties": properties,
                "return_result": result.return_result * scale,
                "extras": extras,
            }
            return result.model_copy(update=update)

        return compute

    return wrap_method(RDKitHarness, "compute", fixed)


def rdkit_energy_kcal(molecule: Molecule, geometry_angstrom: np.ndarray, method: str) -> float:
    """RDKit's own force-field energy (kcal/mol) of ``molecule`` at a geometry in Å."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    rdmol = molecule.to_rdkit()
    rdmol.RemoveAllConformers()
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


class RDKit(QCProgram):
    """Energies are matched to RDKit's own for each geometry.

    qcengine 0.52's rdkit harness converts RDKit's kcal/mol with the kJ/mol factor, so its
    energies are 4.184 times too small. Records made by a fixed harness need no factor. The
    factor is decided from the data, never assumed, and anything else is an error.
    """

    name = "rdkit"
    task_fixes = (fix_rdkit_units,)
    preload = ("rdkit.Chem.AllChem",)
    costs = {
        "mmff94/none": RecordedCost(
            core_seconds_per_gradient=0.09,
            gradients_per_grid_point=34,
            note="butane-hexane 90 deg drives, warm task server, this project's test machine",
        ),
    }
    candidates = (1.0, KJ_PER_KCAL)
    tolerance_kcal = 1e-3

    def check_energies(
        self, spec: QCSpec, molecule: Molecule, geometries: Sequence[np.ndarray], energies: Sequence[float]
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


register_program(RDKit())
