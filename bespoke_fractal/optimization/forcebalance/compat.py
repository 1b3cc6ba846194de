"""Runtime patches that let ForceBalance 1.9.5 run on OpenFF Toolkit 0.18, Interchange 0.5 and OpenMM 8.

ForceBalance 1.9.5 was written against the OpenFF Toolkit 0.10 API and OpenMM 7. The first four
patches fix incompatibilities without which a SMIRNOFF torsion-profile fit fails; the last three
remove costs (time, memory) that the new stack added, with results unchanged (checked:
byte-identical fitted force field and MM energies on the butane test fit). They change classes
in memory, in the ForceBalance process only: `apply()` is called by
`bespoke_fractal.optimization.forcebalance.runner` before ForceBalance's modules run. No installed
file is edited. Every patch checks whether it is still needed, so a stack that already works is
left alone.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_applied: list[str] = []


def apply() -> list[str]:
    """Apply every patch that is needed; return their names (idempotent)."""
    if _applied:
        return list(_applied)
    for patch in (
        _shim_chemical_environment,
        _alias_interchange_handlers,
        _accept_return_topology,
        _force_tolerance_for_minimizer,
        _rebuild_system_only_after_parameter_change,
        _close_torsion_plots,
        _clear_interchange_caches_without_heap_walk,
    ):
        if patch():
            _applied.append(patch.__name__.lstrip("_"))
    return list(_applied)


def _shim_chemical_environment() -> bool:
    """Provide the removed module `openff.toolkit.typing.chemistry.environment`.

    What broke: `forcebalance.smirnoff_hack` (imported by `forcebalance.smirnoffio`) wraps
    `ChemicalEnvironment.validate` in a cache and imports it from
    `openff.toolkit.typing.chemistry.environment`, which Toolkit 0.11 removed. The ImportError is
    caught by `smirnoffio`, which then marks the toolkit as missing and never defines the names
    its SMIRNOFF engine needs (`OpenFF_ForceField`, `OffMolecule`, ...), so every SMIRNOFF target
    fails later with a NameError.

    Why this is right: nothing in Toolkit 0.18 calls `ChemicalEnvironment.validate` (SMIRKS are
    checked by the toolkit wrappers), so the cached wrapper ForceBalance installs is never used.
    A stand-in class that only exists to be wrapped restores the import; its `validate` raises if
    anyone ever does call it rather than pretending to validate.
    """
    try:
        importlib.import_module("openff.toolkit.typing.chemistry.environment")
        return False
    except ImportError:
        pass

    class ChemicalEnvironment:
        """Stand-in for the class removed in OpenFF Toolkit 0.11; see `_shim_chemical_environment`."""

        @staticmethod
        def validate(smirks: str, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError(
                "ChemicalEnvironment was removed in OpenFF Toolkit 0.11; this is a compatibility stub"
            )

    package = types.ModuleType("openff.toolkit.typing.chemistry")
    package.__path__ = []  # a package, so the submodule import resolves
    environment = types.ModuleType("openff.toolkit.typing.chemistry.environment")
    environment.ChemicalEnvironment = ChemicalEnvironment
    package.environment = environment
    sys.modules[package.__name__] = package
    sys.modules[environment.__name__] = environment
    return True


def _alias_interchange_handlers() -> bool:
    """Give `Interchange` a read-only `handlers` attribute that returns `collections`.

    What broke: `SMIRNOFF.prepare` checks `'VirtualSites' in interchange.handlers`. Interchange
    0.3 renamed the attribute to `collections` (same mapping of handler name to collection), so
    the lookup raises AttributeError before any target is set up.

    Why this is right: the attribute was renamed, not changed in meaning; ForceBalance only tests
    membership of a handler name in it. `Interchange.__getitem__` (the other access ForceBalance
    makes) already looks names up in `collections`.
    """
    from openff.interchange import Interchange

    if hasattr(Interchange, "handlers"):
        return False
    Interchange.handlers = property(lambda self: self.collections, doc="alias of `collections`")
    return True


def _accept_return_topology() -> bool:
    """Let `ForceField.create_openmm_system` accept and honour `return_topology=`.

    What broke: `SMIRNOFF.update_simulation` calls
    `forcefield.create_openmm_system(topology, return_topology=True)` and unpacks
    `(system, topology)`. Toolkit 0.11 removed the keyword (systems are built by Interchange and
    the topology is no longer modified), so the call raises TypeError.

    Why this is right: ForceBalance discards the returned topology (it only uses the system).
    The wrapper drops the keyword, calls the toolkit, and when the keyword was true returns
    `(system, topology)` with the topology it was given, which is what the old toolkit returned
    for molecules without virtual sites (ForceBalance refuses virtual sites anyway).
    """
    import inspect

    from openff.toolkit import ForceField

    original = ForceField.create_openmm_system
    if "return_topology" in inspect.signature(original).parameters:
        return False

    def create_openmm_system(self, topology, *args: Any, return_topology: bool = False, **kwargs: Any):
        system = original(self, topology, *args, **kwargs)
        return (system, topology) if return_topology else system

    create_openmm_system.__doc__ = original.__doc__
    create_openmm_system.__wrapped__ = original
    ForceField.create_openmm_system = create_openmm_system
    return True


def _force_tolerance_for_minimizer() -> bool:
    """Make ForceBalance's OpenMM simulations accept an energy-valued minimiser tolerance.

    What broke: `OpenMM.optimize` (used by the torsion-profile target to relax each grid point
    with the driven dihedral frozen) calls `simulation.minimizeEnergy(tolerance=x*kilojoule/mole)`.
    OpenMM 8 declares the tolerance as a force (kJ/mol/nm, the RMS force at which L-BFGS stops)
    and converts any quantity to that unit, so a kJ/mol quantity raises TypeError.

    Why this is right: OpenMM 7 took the tolerance as a bare number in kJ/mol that its L-BFGS
    compared with the gradient; ForceBalance's values (1 down to 1e-4) were chosen for that
    number. Passing the same number as kJ/mol/nm keeps ForceBalance's minimisation schedule and
    its own energy-change convergence loop as written. Only the `Simulation` class that
    `forcebalance.openmmio` instantiates is replaced (a subclass); OpenMM itself is untouched.
    """
    import openmm.unit as u
    from forcebalance import openmmio  # safe: openmmio does not import smirnoff_hack
    from openmm.app import Simulation

    if getattr(openmmio.Simulation, "_bespoke_fractal_compat", False):
        return False
    try:
        (1.0 * u.kilojoule_per_mole).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        return False  # this OpenMM still takes an energy tolerance
    except TypeError:
        pass

    class ForceToleranceSimulation(openmmio.Simulation):
        """`Simulation` whose `minimizeEnergy` reads an energy tolerance as the same number of kJ/mol/nm."""

        _bespoke_fractal_compat = True

        def minimizeEnergy(self, tolerance=10 * u.kilojoule_per_mole / u.nanometer, *args, **kwargs):
            if u.is_quantity(tolerance) and tolerance.unit.is_compatible(u.kilojoule_per_mole):
                tolerance = tolerance.value_in_unit(u.kilojoule_per_mole) * (
                    u.kilojoule_per_mole / u.nanometer
                )
            return super().minimizeEnergy(tolerance, *args, **kwargs)

    assert issubclass(openmmio.Simulation, Simulation)
    openmmio.Simulation = ForceToleranceSimulation
    return True


def _rebuild_system_only_after_parameter_change() -> bool:
    """Rebuild a SMIRNOFF engine's OpenMM system only when ForceBalance has changed parameters.

    What broke (speed, not results): `SMIRNOFF.update_simulation` rebuilds the OpenMM system
    with `create_openmm_system` before every MM minimisation, i.e. once per grid point of every
    objective evaluation, although the parameters change only in `FF.make`, once per
    evaluation. With Toolkit 0.18 each rebuild goes through `Interchange.from_smirnoff`, which
    also walks every object on the heap (`gc.get_objects`) to clear its caches: about 0.2 s per
    build for butane, and growing with the heap. A 12-point butane fit spent 85% of its time
    there.

    Why this is right: every parameter change goes through `forcebalance.forcefield.FF.make`
    (it writes the new values into the OpenFF ForceField the engine builds from). The patch
    counts `make` calls on the FF object and lets an engine skip the rebuild when the count is
    the one it last built with; the existing simulation then already holds exactly the
    parameters a rebuild would copy into it. Engines without an FF object, calls with keyword
    arguments and the first call always rebuild, as before.
    """
    from forcebalance import smirnoffio
    from forcebalance.forcefield import FF

    if getattr(smirnoffio.SMIRNOFF.update_simulation, "_bespoke_fractal_compat", False):
        return False
    original_make = FF.make
    original_update = smirnoffio.SMIRNOFF.update_simulation

    def make(self, *args: Any, **kwargs: Any):
        try:
            return original_make(self, *args, **kwargs)
        finally:
            self._bespoke_fractal_generation = getattr(self, "_bespoke_fractal_generation", 0) + 1

    def update_simulation(self, **kwargs: Any):
        force_field = getattr(self, "FF", None)
        generation = getattr(force_field, "_bespoke_fractal_generation", None)
        built = (id(force_field), generation)
        if (
            kwargs
            or generation is None
            or not hasattr(self, "simulation")
            or getattr(self, "_bespoke_fractal_built", None) != built
        ):
            original_update(self, **kwargs)
            self._bespoke_fractal_built = built

    make.__wrapped__ = original_make
    update_simulation.__wrapped__ = original_update
    update_simulation._bespoke_fractal_compat = True
    FF.make = make
    smirnoffio.SMIRNOFF.update_simulation = update_simulation
    return True


def _close_torsion_plots() -> bool:
    """Close the matplotlib figures the torsion-profile target leaves open.

    What broke (memory, not results): with `writelevel` > 0, `TorsionProfileTarget.get` draws
    `plot_torsion.pdf` with `plt.subplots()` on every objective evaluation (each iteration and
    each trial step of the trust-radius search) and never closes the figure. Matplotlib 3 keeps
    pyplot figures alive until closed, so a fit accumulates hundreds of them (and matplotlib
    warns after 20). They also lengthen Interchange's `gc.get_objects` walk on every system
    build.

    Why this is right: the figure is saved to disk before `get` returns and is not used again;
    nothing else in the ForceBalance process draws with pyplot, so closing every pyplot figure
    after `get` loses nothing.
    """
    from forcebalance.torsion_profile import TorsionProfileTarget

    if getattr(TorsionProfileTarget.get, "_bespoke_fractal_compat", False):
        return False
    original = TorsionProfileTarget.get

    def get(self, *args: Any, **kwargs: Any):
        try:
            return original(self, *args, **kwargs)
        finally:
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:
                pyplot.close("all")

    get.__wrapped__ = original
    get._bespoke_fractal_compat = True
    TorsionProfileTarget.get = get
    return True


def _clear_interchange_caches_without_heap_walk() -> bool:
    """Clear Interchange's lru caches on every system build without walking the whole heap.

    What broke (time, not results): `Interchange.from_smirnoff` calls `_clear_caches`, which runs
    `gc.get_objects()` over every live object of the process to find the `functools.lru_cache`
    wrappers of `openff.interchange` and clears them. ForceBalance rebuilds the system after
    every parameter change (tens of times per fit), and with the toolkit, OpenMM and
    ForceBalance loaded the walks cost a butane fit ~2.5 s of ~10 s (measured: 6.9-7.9 s with
    this patch, 9.8-10.3 s without).

    Why this is right: every such wrapper in Interchange 0.5 is made when its module is imported
    (module-level functions and one classmethod; none is made per call). The first call walks
    the heap as the original does and keeps the wrappers it found; later calls clear those, and
    walk again only when another `openff.interchange` module has been imported since. The same
    caches are cleared at the same moments.
    """
    import functools
    import gc

    try:
        from openff.interchange.components import interchange as module
    except ImportError:
        return False
    original = getattr(module, "_clear_caches", None)
    if original is None or getattr(original, "_bespoke_fractal_compat", False):
        return False
    found: list[Any] = []
    seen_modules: set[str] = set()

    def interchange_modules() -> set[str]:
        return {name for name in list(sys.modules) if name.startswith("openff.interchange")}

    def clear_caches() -> None:
        modules = interchange_modules()
        if modules != seen_modules:
            found.clear()
            for obj in gc.get_objects():
                try:
                    if isinstance(obj, functools._lru_cache_wrapper) and obj.__module__.startswith(
                        "openff.interchange"
                    ):
                        found.append(obj)
                except ReferenceError:
                    continue
            seen_modules.clear()
            seen_modules.update(modules)
        for wrapper in found:
            wrapper.cache_clear()

    clear_caches.__wrapped__ = original
    clear_caches._bespoke_fractal_compat = True
    module._clear_caches = clear_caches
    return True
