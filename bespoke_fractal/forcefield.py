"""Loading the initial SMIRNOFF force field and checking it can be used for torsion fits."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

from openff.toolkit import ForceField, Molecule

from bespoke_fractal.errors import MoleculeInputError, WorkflowError, first_line


def load_force_field(name: str) -> ForceField:
    """A force field by installed name (``openff_unconstrained-2.2.1.offxml``) or .offxml path."""
    path = Path(name).expanduser()
    key = (str(path.resolve()), path.stat().st_mtime) if path.is_file() else (name, 0.0)
    return _load(*key)


@lru_cache(maxsize=8)
def _load(name: str, _mtime: float) -> ForceField:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ForceField(name, load_plugins=False)
    except Exception as exc:
        first = first_line(exc)
        raise WorkflowError(f"cannot load force field '{name}': {first}") from None


def check_unconstrained(name: str) -> str:
    """`name` if its force field does not constrain bonds to hydrogen."""
    force_field = load_force_field(name)
    ethane = Molecule.from_smiles("CC")
    if force_field.label_molecules(ethane.to_topology())[0].get("Constraints"):
        raise WorkflowError(
            f"'{name}' constrains bonds to hydrogen; torsion fitting needs an unconstrained force "
            "field, e.g. openff_unconstrained-2.2.1.offxml"
        )
    return name


def check_parametrizes(name: str, molecule: Molecule) -> None:
    """Raise MoleculeInputError unless the force field has a vdW, bond, angle and torsion
    parameter for every atom, bond, angle and proper torsion of `molecule`."""
    force_field = load_force_field(name)
    smiles = molecule.to_smiles(explicit_hydrogens=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = force_field.label_molecules(molecule.to_topology())[0]
    except Exception as exc:
        first = first_line(exc)
        raise MoleculeInputError(f"{smiles}: {Path(name).name} cannot parametrize it: {first}") from None
    expected = {
        "vdW": [(atom.molecule_atom_index,) for atom in molecule.atoms],
        "Bonds": [tuple(atom.molecule_atom_index for atom in bond.atoms) for bond in molecule.bonds],
        "Angles": [tuple(atom.molecule_atom_index for atom in angle) for angle in molecule.angles],
        "ProperTorsions": [tuple(atom.molecule_atom_index for atom in p) for p in molecule.propers],
    }
    for handler, terms in expected.items():
        found = {tuple(key) for key in labels.get(handler, {})}
        missing = [term for term in terms if term not in found and term[::-1] not in found]
        if missing:
            atoms = "-".join(f"{molecule.atoms[i].symbol}{i}" for i in missing[0])
            raise MoleculeInputError(
                f"{smiles}: {Path(name).name} has no {handler} parameter for {atoms}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
