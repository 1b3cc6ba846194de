"""Models and chemistry foundations shared by every stage; imports no stage.

Torsion identity and automorphisms (`identity`), units (`units`), the toolkit registry
(`toolkits`), QC specifications and presets (`qc`), fragmentation output (`fragments`),
optimiser settings (`optimizers`), drive and fit results (`drives`, `fits`) and the job
description of one molecule (`workflow`).
"""
