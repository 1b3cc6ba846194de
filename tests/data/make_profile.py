"""Compute a real MMFF94 torsion profile with qcengine's torsiondrive procedure (no server).

usage: python tests/data/make_profile.py SMILES i,j OUT.json [GRID]

Writes a bespoke_fractal.schema.fits.TorsionProfile as JSON (target_index 0): the
torsion identity's canonical fragment and dihedral, one geomeTRIC-optimised RDKit MMFF94
geometry per grid point, energies in kcal/mol relative to the lowest. qcengine 0.52's rdkit
harness returns energies 4.184x too small (docs: /work/shared/notes/stack.md); they are
corrected here.

The test data were made with this script (copied from /tmp/profiles/make_profile.py, reformatted):
    butane_mmff94_30.json:   python tests/data/make_profile.py CCCC 1,2 OUT 30
    biphenyl_mmff94_30.json: the same on biphenyl's inter-ring bond, 30° grid
"""

import json
import sys

import numpy as np
import qcelemental as qcel
import qcengine
from openff.toolkit import Molecule
from qcelemental.models.procedures import TorsionDriveInput

from bespoke_fractal.schema.fits import TorsionProfile
from bespoke_fractal.schema.identity import canonicalize_torsion, default_dihedral, starting_geometries
from bespoke_fractal.schema.qc import DEFAULT_GEOMETRIC_KEYWORDS

KCAL_MOL_PER_HARTREE = 627.509474
QCENGINE_RDKIT_FACTOR = 4.184


def main() -> None:
    smiles, bond, out = sys.argv[1], tuple(int(x) for x in sys.argv[2].split(",")), sys.argv[3]
    grid = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    molecule = Molecule.from_smiles(smiles)
    identity = canonicalize_torsion(molecule, default_dihedral(molecule, bond)).identity
    canonical = identity.to_molecule()
    geometry = starting_geometries(identity, 1)[0]
    qc_molecule = qcel.models.Molecule(
        symbols=[atom.symbol for atom in canonical.atoms],
        geometry=geometry / qcel.constants.bohr2angstroms,
        connectivity=[(b.atom1_index, b.atom2_index, b.bond_order) for b in canonical.bonds],
    )
    drive = TorsionDriveInput(
        keywords={"dihedrals": [list(identity.dihedral)], "grid_spacing": [grid]},
        input_specification={"driver": "gradient", "model": {"method": "mmff94"}},
        initial_molecule=[qc_molecule],
        optimization_spec={
            "procedure": "geometric",
            "keywords": dict(DEFAULT_GEOMETRIC_KEYWORDS, program="rdkit"),
        },
    )
    result = qcengine.compute_procedure(drive, "torsiondrive", raise_error=True)
    angles, energies, geometries = [], [], []
    for key, energy in sorted(result.final_energies.items(), key=lambda kv: int(kv[0].strip("[]"))):
        angles.append(int(key.strip("[]")))
        energies.append(energy * KCAL_MOL_PER_HARTREE * QCENGINE_RDKIT_FACTOR)
        final = np.asarray(result.final_molecules[key].geometry) * qcel.constants.bohr2angstroms
        geometries.append(final.tolist())
    relative = np.asarray(energies) - min(energies)
    profile = TorsionProfile(
        target_index=0,
        mapped_smiles=identity.mapped_smiles,
        dihedral=identity.dihedral,
        angles=angles,
        energies_kcal_mol=relative.tolist(),
        geometries_angstrom=geometries,
    )
    with open(out, "w") as file:
        file.write(profile.model_dump_json())
    print(out, angles, json.dumps(np.round(relative, 2).tolist()))


if __name__ == "__main__":
    main()
