"""Many molecules through the fragmentation stage, in worker processes, one outcome each."""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field

from bespoke_fractal.errors import BespokeFractalError, first_line
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.molecules import MoleculeInput, load_molecules
from bespoke_fractal.schema.identity import TorsionIdentity
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow.factory import BespokeWorkflowFactory


class SchemaOutcome(BaseModel):
    """One molecule of a batch: its job description, or the one-line reason there is none."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: str
    schema_: BespokeOptimizationSchema | None = Field(None, alias="schema")
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.schema_ is not None


def build_schemas(
    factory: BespokeWorkflowFactory,
    sources: str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput],
    n_workers: int = 1,
    cache_directory: Path | str | None = None,
    enumerate_stereo: bool = False,
) -> list[SchemaOutcome]:
    """Job descriptions for every molecule, in input order; a bad molecule affects only itself.

    AM1 bond orders are shared through `cache_directory` (also between worker processes).
    """
    batch = load_batch(sources, enumerate_stereo)
    if n_workers <= 1 or len(batch) <= 1:
        return [build_schema(factory, item, cache_directory) for item in batch]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(n_workers, len(batch)), mp_context=context) as pool:
        futures = [pool.submit(build_schema, factory, item, cache_directory) for item in batch]
        return [_outcome(future, item) for future, item in zip(futures, batch, strict=True)]


def load_batch(
    sources: str | Path | Molecule | Iterable[str | Path | Molecule | MoleculeInput],
    enumerate_stereo: bool = False,
) -> list[MoleculeInput]:
    """Every molecule of the sources, in order (a source already read is kept as it is)."""
    if isinstance(sources, (str, Path, Molecule, MoleculeInput)):
        sources = [sources]
    batch: list[MoleculeInput] = []
    for source in sources:
        if isinstance(source, MoleculeInput):
            batch.append(source)
        else:
            batch.extend(load_molecules(source, enumerate_stereo=enumerate_stereo))
    return batch


def _outcome(future: Future, item: MoleculeInput) -> SchemaOutcome:
    try:
        return future.result()
    except Exception as exc:  # a worker process died (e.g. killed for memory)
        return SchemaOutcome(name=item.name, error=f"fragmentation worker failed: {first_line(exc)}")


def build_schema(
    factory: BespokeWorkflowFactory, item: MoleculeInput, cache_directory: Path | str | None
) -> SchemaOutcome:
    """The job description of one molecule, or its one-line error (never raises for a bad one)."""
    if not item.ok:
        return SchemaOutcome(name=item.name, error=item.error)
    start = time.perf_counter()
    try:
        schema = factory.optimization_schema_from_molecule(item.molecule, AM1BondOrderCache(cache_directory))
    except BespokeFractalError as exc:
        return SchemaOutcome(name=item.name, error=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # a library bug on one molecule must not end the batch
        logging.getLogger(__name__).exception("fragmentation of %s failed", item.name)
        error = f"unexpected {type(exc).__name__}: {first_line(exc)}"
        return SchemaOutcome(name=item.name, error=error, seconds=time.perf_counter() - start)
    return SchemaOutcome(name=item.name, schema_=schema, seconds=time.perf_counter() - start)


def unique_drives(schemas: Iterable[BespokeOptimizationSchema]) -> dict[str, TorsionIdentity]:
    """The distinct QC torsion drives a set of jobs needs, keyed by identity."""
    drives: dict[str, TorsionIdentity] = {}
    for schema in schemas:
        for identity in schema.fragmentation.unique_identities:
            drives.setdefault(identity.key, identity)
    return drives
