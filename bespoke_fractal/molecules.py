"""Reading the molecules a user asks to fit: SMILES, SDF/MOL2 files, or OpenFF molecules.

Every input becomes one or more :class:`MoleculeInput`, each holding either a molecule or a
one-line error, so that one bad entry never stops the rest of a batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict
from rdkit import Chem, rdBase

from bespoke_fractal.errors import MoleculeInputError, first_line

MOLECULE_FILE_SUFFIXES = (".sdf", ".mol", ".sd", ".mol2")


class MoleculeInput(BaseModel):
    """One molecule of a batch, or the reason it could not be read."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    """SMILES as given, or ``file.sdf#3`` / the record's title."""
    molecule: Molecule | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.molecule is not None


def load_molecules(
    sources: str | Path | Molecule | Iterable[str | Path | Molecule], enumerate_stereo: bool = False
) -> list[MoleculeInput]:
    """Read every source (SMILES, molecule file, or ``Molecule``) into a flat batch.

    A file of many molecules gives one entry per record. Undefined stereochemistry is an
    error naming the atoms, unless ``enumerate_stereo`` asks for every stereoisomer.
    """
    if isinstance(sources, (str, Path, Molecule)):
        sources = [sources]
    batch: list[MoleculeInput] = []
    for source in sources:
        for name, read in _records(source):
            try:
                molecules = _checked(read(), enumerate_stereo)
            except MoleculeInputError as exc:
                batch.append(MoleculeInput(name=name, error=str(exc)))
                continue
            for i, molecule in enumerate(molecules):
                label = name if len(molecules) == 1 else f"{name} [stereoisomer {i + 1}]"
                batch.append(MoleculeInput(name=label, molecule=molecule))
    return batch


def load_molecule(source: str | Path | Molecule) -> Molecule:
    """Exactly one molecule from a SMILES, a single-record file or a ``Molecule``."""
    batch = load_molecules(source)
    if len(batch) != 1:
        raise MoleculeInputError(f"{source}: expected one molecule, found {len(batch)}")
    if not batch[0].ok:
        raise MoleculeInputError(batch[0].error)
    return batch[0].molecule


def _records(source: str | Path | Molecule) -> Iterator[tuple[str, callable]]:
    """(name, reader) pairs; a reader returns a Molecule that may have undefined stereo."""
    if isinstance(source, Molecule):
        yield source.name or source.to_smiles(explicit_hydrogens=False), lambda: Molecule(source)
        return
    text = str(source).strip()
    path = Path(text)
    looks_like_file = (
        isinstance(source, Path) or path.suffix.lower() in MOLECULE_FILE_SUFFIXES or path.is_file()
    )
    if not looks_like_file:
        yield text, lambda: _from_smiles(text)
        return
    if not path.is_file():
        yield text, _raiser(f"{text}: no such file")
        return
    suffix = path.suffix.lower()
    if suffix == ".mol2":
        blocks = _mol2_blocks(path)
        to_rdkit = lambda block: Chem.MolFromMol2Block(block, removeHs=False)  # noqa: E731
    elif suffix in (".sdf", ".mol", ".sd"):
        blocks = _sdf_blocks(path)
        to_rdkit = lambda block: Chem.MolFromMolBlock(block, removeHs=False)  # noqa: E731
    else:
        yield text, _raiser(f"{text}: not a molecule file (use .sdf, .mol or .mol2, or a SMILES)")
        return
    if not blocks:
        yield text, _raiser(f"{text}: no molecule records in the file")
        return
    for i, block in enumerate(blocks, start=1):
        title = block.splitlines()[0].strip() if suffix != ".mol2" else _mol2_title(block)
        name = f"{path.name}#{i}" + (f" ({title})" if title else "")
        yield name, lambda block=block, name=name: _from_rdkit(_quietly(to_rdkit, block), name)


def _quietly(parse, block: str) -> Chem.Mol | None:
    with rdBase.BlockLogs():
        return parse(block)


def _raiser(message: str):
    def read() -> Molecule:
        raise MoleculeInputError(message)

    return read


def _from_smiles(smiles: str) -> Molecule:
    if not smiles:
        raise MoleculeInputError("empty SMILES")
    with rdBase.BlockLogs():
        parsed = Chem.MolFromSmiles(smiles)
    if parsed is None:
        raise MoleculeInputError(f"cannot read SMILES '{smiles}' (RDKit rejects it)")
    _reject_radicals(parsed, smiles)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Molecule.from_smiles(smiles, allow_undefined_stereo=True)
    except Exception as exc:  # the toolkit raises many unrelated types for bad chemistry
        raise MoleculeInputError(f"SMILES '{smiles}': {first_line(exc)}") from None


def _from_rdkit(rdmol: Chem.Mol | None, name: str) -> Molecule:
    if rdmol is None:
        raise MoleculeInputError(f"{name}: RDKit cannot read this record")
    _reject_radicals(rdmol, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            molecule = Molecule.from_rdkit(rdmol, allow_undefined_stereo=True, hydrogens_are_explicit=False)
    except Exception as exc:
        raise MoleculeInputError(f"{name}: {first_line(exc)}") from None
    molecule.name = name
    return molecule


def _checked(molecule: Molecule, enumerate_stereo: bool) -> list[Molecule]:
    """The molecule (or its stereoisomers) after the checks every stage relies on."""
    smiles = molecule.to_smiles(explicit_hydrogens=False)
    _reject_radicals(molecule.to_rdkit(), smiles)
    undefined = undefined_stereo(molecule)
    if not undefined:
        return [molecule]
    if not enumerate_stereo:
        raise MoleculeInputError(
            f"{smiles}: undefined stereochemistry at {', '.join(undefined)}; "
            "specify it, or ask for every stereoisomer (enumerate_stereo / --enumerate-stereo)"
        )
    isomers = molecule.enumerate_stereoisomers(undefined_only=True, rationalise=True)
    if not isomers:
        raise MoleculeInputError(f"{smiles}: no valid stereoisomer could be enumerated")
    return isomers


def _reject_radicals(rdmol: Chem.Mol, name: str) -> None:
    radicals = [f"{a.GetSymbol()}{a.GetIdx()}" for a in rdmol.GetAtoms() if a.GetNumRadicalElectrons()]
    if radicals:
        raise MoleculeInputError(
            f"{name}: radical (unpaired electrons on {', '.join(radicals)}); "
            "only closed-shell molecules can be fitted"
        )


def undefined_stereo(molecule: Molecule) -> list[str]:
    """Atoms (``C3``) and double bonds (``C1=C2``) whose stereochemistry is not given."""
    rdmol = molecule.to_rdkit()
    names = []
    for info in Chem.FindPotentialStereo(rdmol):
        if info.specified != Chem.StereoSpecified.Unspecified:
            continue
        if info.type == Chem.StereoType.Atom_Tetrahedral:
            atom = rdmol.GetAtomWithIdx(info.centeredOn)
            names.append(f"atom {atom.GetSymbol()}{atom.GetIdx()}")
        elif info.type == Chem.StereoType.Bond_Double:
            bond = rdmol.GetBondWithIdx(info.centeredOn)
            a, b = bond.GetBeginAtom(), bond.GetEndAtom()
            names.append(f"bond {a.GetSymbol()}{a.GetIdx()}={b.GetSymbol()}{b.GetIdx()}")
    return names


def _sdf_blocks(path: Path) -> list[str]:
    blocks = []
    for i, part in enumerate(path.read_text(errors="replace").replace("\r\n", "\n").split("$$$$")):
        # keep a blank title line: drop only the newline that ends the "$$$$" line
        block = part[1:] if i and part.startswith("\n") else part
        if "M  END" in block:
            blocks.append(block)
    return blocks


def _mol2_blocks(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    parts = text.split("@<TRIPOS>MOLECULE")[1:]
    return ["@<TRIPOS>MOLECULE" + part for part in parts]


def _mol2_title(block: str) -> str:
    lines = block.splitlines()
    return lines[1].strip() if len(lines) > 1 else ""
