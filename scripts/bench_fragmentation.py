#!/usr/bin/env python
"""Benchmark of the fragmentation stage (WBO fragmenter, AM1 ELF10 bond orders).

Fragments each molecule with an empty AM1 cache, then again with the cache warm, and prints per
molecule: fragments, target torsions, unique drives, AM1 calculations run and reused, and both
times; then the unique drives of the whole batch after deduplication across molecules.

    .venv/bin/python scripts/bench_fragmentation.py [--workflow debug] [SMILES ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.workflow import BespokeWorkflowFactory, unique_drives

MOLECULES = {
    "butane": "CCCC",
    "biphenyl": "c1ccc(cc1)-c1ccccc1",
    "1,4-diethylbenzene": "CCc1ccc(CC)cc1",
    "butanoate": "CCCC(=O)[O-]",
    "(S)-ibuprofen": "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O",
    "(S)-2-phenylpropanoic acid": "C[C@H](C(=O)O)c1ccccc1",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("smiles", nargs="*", help="molecules (default: a fixed set of six)")
    parser.add_argument("--workflow", default="debug", help="workflow preset (fragmenter settings)")
    args = parser.parse_args()
    molecules = {smiles: smiles for smiles in args.smiles} or MOLECULES
    factory = BespokeWorkflowFactory.from_preset(args.workflow)

    directory = Path(tempfile.mkdtemp(prefix="bf-bench-am1-"))
    table = Table(
        "molecule", "fragments", "target torsions", "unique drives", "AM1 run", "AM1 reused",
        "cold s", "warm s",
        title=f"fragmentation ({factory.fragmentation_engine.type}), one process",
    )  # fmt: skip
    schemas = []
    try:
        for name, smiles in molecules.items():
            start = time.perf_counter()
            schema = factory.optimization_schema_from_molecule(smiles, AM1BondOrderCache(directory))
            cold = time.perf_counter() - start
            start = time.perf_counter()
            again = factory.optimization_schema_from_molecule(smiles, AM1BondOrderCache(directory))
            warm = time.perf_counter() - start
            assert again.fragmentation.targets == schema.fragmentation.targets
            fragmented = schema.fragmentation
            table.add_row(
                name,
                str(len(fragmented.fragments)),
                str(sum(len(t.parent_bonds) for t in fragmented.targets)),
                str(len(fragmented.unique_identities)),
                str(fragmented.am1_computed),
                str(fragmented.am1_reused),
                f"{cold:.1f}",
                f"{warm:.2f}",
            )
            schemas.append(schema)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    console = Console(width=150)
    console.print(table)
    per_molecule = sum(len(s.fragmentation.unique_identities) for s in schemas)
    console.print(
        f"batch: {per_molecule} drives molecule by molecule, "
        f"{len(unique_drives(schemas))} after deduplication across molecules"
    )


if __name__ == "__main__":
    main()
