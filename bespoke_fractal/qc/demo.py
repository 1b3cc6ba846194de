"""The QC-stage demonstration: one torsion of a small drug-like molecule on the embedded server."""

from __future__ import annotations

from openff.toolkit import Molecule

from bespoke_fractal.qc.torsiondrive import TorsionDriveStage
from bespoke_fractal.schema.drives import TorsionDriveResult
from bespoke_fractal.schema.identity import default_dihedral
from bespoke_fractal.schema.qc import QCSpec
from bespoke_fractal.server import ServerConnection

# Paracetamol; the aryl-N bond joins the amide to the ring.
DEMO_SMILES = "CC(=O)Nc1ccc(O)cc1"


def demo_bond(molecule: Molecule) -> tuple[int, int]:
    """The bond between the aromatic carbon and the amide nitrogen."""
    for bond in molecule.bonds:
        atoms = {bond.atom1, bond.atom2}
        nitrogen = next((x for x in atoms if x.atomic_number == 7), None)
        carbon = next((x for x in atoms if x.atomic_number == 6 and x.is_aromatic), None)
        if nitrogen is not None and carbon is not None:
            return bond.atom1_index, bond.atom2_index
    raise ValueError("demo molecule has no aryl-N bond")


def run_demo(
    connection: ServerConnection, spec: QCSpec, smiles: str = DEMO_SMILES, **wait_options
) -> TorsionDriveResult:
    molecule = Molecule.from_smiles(smiles)
    dihedral = default_dihedral(molecule, demo_bond(molecule))
    stage = TorsionDriveStage(connection.client())
    return stage.run(molecule, [dihedral], spec, **wait_options)[0]
