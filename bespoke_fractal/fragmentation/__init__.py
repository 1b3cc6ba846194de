"""The fragmentation stage: which torsions to fit, and on which fragments they are driven."""

from bespoke_fractal.fragmentation.am1_cache import AM1BondOrderCache
from bespoke_fractal.fragmentation.engines import (
    Fragmenter,
    FragmenterBase,
    NoFragmentation,
    PfizerFragmentation,
    WBOFragmentation,
)
from bespoke_fractal.fragmentation.stage import fragment_molecule
from bespoke_fractal.fragmentation.targets import (
    DEFAULT_TARGET_SMARTS,
    check_target_smarts,
    find_target_bonds,
    symmetry_groups,
)
from bespoke_fractal.schema.fragments import Fragment, FragmentedMolecule, TorsionTarget

__all__ = [
    "AM1BondOrderCache",
    "DEFAULT_TARGET_SMARTS",
    "Fragment",
    "FragmentedMolecule",
    "Fragmenter",
    "FragmenterBase",
    "NoFragmentation",
    "PfizerFragmentation",
    "TorsionTarget",
    "WBOFragmentation",
    "check_target_smarts",
    "find_target_bonds",
    "fragment_molecule",
    "symmetry_groups",
]
