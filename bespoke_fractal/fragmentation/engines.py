"""Fragmenters, one registered class each, chosen in a workflow by their ``type`` field.

A new fragmenter is one more class here added to :data:`Fragmenter`.
"""

from __future__ import annotations

import abc
import warnings
from typing import Annotated, ClassVar, Literal

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.errors import FragmentationError, first_line
from bespoke_fractal.fragmentation.am1_cache import AM1BondOrderCache
from bespoke_fractal.schema.fragments import Bond
from bespoke_fractal.schema.toolkits import toolkit_registry

FragmentMap = tuple[Molecule, dict[int, int]]
"""A fragment (its own atom order) and its fragment -> parent atom index map."""


class FragmenterBase(BaseModel, abc.ABC):
    """Cuts a molecule into one fragment per target bond."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    uses_am1: ClassVar[bool] = False

    @abc.abstractmethod
    def fragment(
        self, molecule: Molecule, smarts: list[str], cache: AM1BondOrderCache
    ) -> dict[Bond, FragmentMap]:
        """For every bond matched by `smarts` (sorted parent indices), its fragment."""


class WBOFragmentation(FragmenterBase):
    """openff-fragmenter's WBOFragmenter: grow each fragment until the AM1 ELF10 Wiberg bond
    order of the central bond is within `threshold` of the parent's."""

    type: Literal["WBO"] = "WBO"
    uses_am1: ClassVar[bool] = True
    threshold: float = Field(0.03, gt=0, description="largest allowed WBO change of the central bond")
    heuristic: Literal["path_length", "wbo"] = Field(
        "path_length", description="how a fragment grows when the WBO changes too much"
    )
    keep_non_rotor_ring_substituents: bool = False
    max_conformers: int = Field(800, ge=1, description="conformer pool for ELF10 selection")
    rms_threshold: float = Field(1.0, gt=0, description="Å; conformers closer than this are pruned")

    def fragment(
        self, molecule: Molecule, smarts: list[str], cache: AM1BondOrderCache
    ) -> dict[Bond, FragmentMap]:
        from openff.fragmenter.fragment import WBOFragmenter, WBOOptions

        engine = WBOFragmenter(
            threshold=self.threshold,
            heuristic=self.heuristic,
            keep_non_rotor_ring_substituents=self.keep_non_rotor_ring_substituents,
            wbo_options=WBOOptions(max_conformers=self.max_conformers, rms_threshold=self.rms_threshold),
        )
        with cache.installed():
            return _run(engine, molecule, smarts, toolkit_registry())


class PfizerFragmentation(FragmenterBase):
    """openff-fragmenter's PfizerFragmenter: the torsion quartet plus rings, functional
    groups and caps (doi:10.1021/acs.jcim.9b00373). No AM1."""

    type: Literal["Pfizer"] = "Pfizer"

    def fragment(
        self, molecule: Molecule, smarts: list[str], cache: AM1BondOrderCache
    ) -> dict[Bond, FragmentMap]:
        from openff.fragmenter.fragment import PfizerFragmenter

        return _run(PfizerFragmenter(), molecule, smarts)


class NoFragmentation(FragmenterBase):
    """Drive every torsion on the whole molecule."""

    type: Literal["none"] = "none"

    def fragment(
        self, molecule: Molecule, smarts: list[str], cache: AM1BondOrderCache
    ) -> dict[Bond, FragmentMap]:
        from bespoke_fractal.fragmentation.targets import find_target_bonds

        identity = {i: i for i in range(molecule.n_atoms)}
        return {bond: (Molecule(molecule), identity) for bond in find_target_bonds(molecule, smarts)}


Fragmenter = Annotated[WBOFragmentation | PfizerFragmentation | NoFragmentation, Field(discriminator="type")]


def _run(engine, molecule: Molecule, smarts: list[str], registry=None) -> dict[Bond, FragmentMap]:
    """Run an openff-fragmenter engine and express its fragments in `molecule`'s indices."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = engine.fragment(Molecule(molecule), target_bond_smarts=smarts, toolkit_registry=registry)
            # openff-fragmenter renumbers the parent canonically; map its numbering onto ours
            numbered = Molecule.from_mapped_smiles(result.parent_smiles, allow_undefined_stereo=True)
            same, to_input = Molecule.are_isomorphic(numbered, molecule, return_atom_map=True)
            if not same:
                raise FragmentationError("openff-fragmenter changed the parent molecule")
            # the toolkit's from_mapped_smiles turns its mapping warning back on globally
            warnings.simplefilter("ignore")
            fragments = {}
            for item in result.fragments:
                fragment = Molecule.from_smiles(item.smiles, allow_undefined_stereo=True)
                atom_map = fragment.properties.pop("atom_map")
                parent_atoms = {i: to_input[number - 1] for i, number in atom_map.items()}
                bond = tuple(sorted(to_input[number - 1] for number in item.bond_indices))
                fragments[bond] = (fragment, parent_atoms)
    except FragmentationError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise FragmentationError(f"{type(engine).__name__} failed: {first}") from None
    return fragments
