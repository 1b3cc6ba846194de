"""A cache of AM1 ELF10 Wiberg bond orders keyed by canonical molecule identity.

The WBO fragmenter computes AM1 bond orders of the parent and of every candidate fragment,
often for the same molecule several times, and each costs seconds to minutes. This cache
computes each molecule once: in memory for the process, and in a directory (one JSON file per
molecule, written atomically, with a lock so concurrent workers compute a molecule once) so
that later runs and other molecules reuse the numbers.

The key is the canonical isomeric SMILES with explicit hydrogens plus the ELF10 options;
bond orders are stored against canonical atom indices, so any atom order of the same molecule
finds them.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from openff.toolkit import Molecule
from pydantic import BaseModel
from rdkit import Chem

from bespoke_fractal.errors import FragmentationError, first_line
from bespoke_fractal.schema.identity import canonical_atom_order

METHOD = "am1-wiberg-elf10"


class AM1CacheStats(BaseModel):
    """What a cache did during one fragmentation."""

    computed: int = 0
    reused: int = 0
    seconds_computing: float = 0.0


class AM1BondOrderCache:
    """AM1 ELF10 Wiberg bond orders, computed once per molecule and ELF10 options."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._unwritable(exc)
        self._memory: dict[str, dict[tuple[int, int], float]] = {}
        self.stats = AM1CacheStats()

    def bond_orders(
        self,
        molecule: Molecule,
        max_confs: int,
        rms_threshold: float,
        compute: Callable[[Molecule, int, float], Molecule],
    ) -> Molecule:
        """A copy of `molecule` with ``fractional_bond_order`` set on every bond."""
        rdmol = molecule.to_rdkit()
        order = canonical_atom_order(rdmol)
        canonical = {atom: rank for rank, atom in enumerate(order)}
        smiles = Chem.MolToSmiles(rdmol)
        key = _key(smiles, max_confs, rms_threshold)
        stored = self._memory.get(key) or self._load(key)
        if stored is None:
            with self._lock(key):
                stored = self._load(key)
                if stored is None:
                    start = time.perf_counter()
                    computed = compute(molecule, max_confs, rms_threshold)
                    self.stats.seconds_computing += time.perf_counter() - start
                    self.stats.computed += 1
                    stored = {
                        _pair(canonical, bond.atom1_index, bond.atom2_index): bond.fractional_bond_order
                        for bond in computed.bonds
                    }
                    self._save(key, smiles, max_confs, rms_threshold, stored)
                else:
                    self.stats.reused += 1
        else:
            self.stats.reused += 1
        self._memory[key] = stored
        result = copy.deepcopy(molecule)
        for bond in result.bonds:
            bond.fractional_bond_order = stored[_pair(canonical, bond.atom1_index, bond.atom2_index)]
        return result

    @contextlib.contextmanager
    def installed(self) -> Iterator[AM1BondOrderCache]:
        """Make openff-fragmenter's WBO fragmenter use this cache while the block runs.

        openff-fragmenter has no hook for this: its module-level function is swapped for a
        caching wrapper and restored afterwards.
        """
        from openff.fragmenter import fragment as fragmenter_module

        original = fragmenter_module.assign_elf10_am1_bond_orders

        def cached(molecule: Molecule, max_confs: int = 800, rms_threshold: float = 1.0) -> Molecule:
            return self.bond_orders(molecule, max_confs, rms_threshold, _checked(original))

        fragmenter_module.assign_elf10_am1_bond_orders = cached
        try:
            yield self
        finally:
            fragmenter_module.assign_elf10_am1_bond_orders = original

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.json" if self.directory is not None else None

    def _load(self, key: str) -> dict[tuple[int, int], float] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            return {(i, j): float(value) for i, j, value in data["bond_orders"]}
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry is recomputed and overwritten

    def _save(self, key: str, smiles: str, max_confs: int, rms: float, orders: dict) -> None:
        path = self._path(key)
        if path is None:
            return
        data = {
            "smiles": smiles,
            "method": METHOD,
            "max_conformers": max_confs,
            "rms_threshold": rms,
            "bond_orders": [[i, j, value] for (i, j), value in sorted(orders.items())],
        }
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(handle, "w") as stream:
                json.dump(data, stream)
            os.replace(temporary, path)
        except OSError as exc:  # a full disk: the bond orders stay in memory
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)
            self._unwritable(exc)

    def _unwritable(self, exc: OSError) -> None:
        """Go on without the disk cache (read-only or full file system): one warning."""
        logging.getLogger(__name__).warning(
            "AM1 cache %s not writable (%s); bond orders are not kept", self.directory, exc.strerror
        )
        self.directory = None

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        if self.directory is not None:
            try:
                stream = open(self.directory / f"{key}.lock", "w")  # noqa: SIM115 - held while computing
            except OSError as exc:
                self._unwritable(exc)
        if self.directory is None:
            yield
            return
        with stream:
            fcntl.flock(stream, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(stream, fcntl.LOCK_UN)


def _checked(original: Callable) -> Callable[[Molecule, int, float], Molecule]:
    def compute(molecule: Molecule, max_confs: int, rms_threshold: float) -> Molecule:
        try:
            return original(molecule, max_confs, rms_threshold)
        except Exception as exc:
            first = first_line(exc)
            raise FragmentationError(
                f"AM1 Wiberg bond orders failed for {molecule.to_smiles(explicit_hydrogens=False)}: {first}"
            ) from None

    return compute


def _key(smiles: str, max_confs: int, rms_threshold: float) -> str:
    text = json.dumps([METHOD, smiles, max_confs, rms_threshold])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pair(canonical: dict[int, int], i: int, j: int) -> tuple[int, int]:
    a, b = canonical[i], canonical[j]
    return (a, b) if a < b else (b, a)
