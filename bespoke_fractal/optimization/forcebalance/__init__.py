"""ForceBalance torsion fits: job directory, compatibility patches, and a bounded run in its own process.

- `inputs`: writes the ForceBalance job (optimize.in, force field, one target per profile);
- `compat`: runtime patches for ForceBalance 1.9.5 on OpenFF Toolkit 0.18 / Interchange 0.5 / OpenMM 8;
- `runner`: the ForceBalance process (`python -m bespoke_fractal.optimization.forcebalance.runner DIR`);
- `run`: `run_forcebalance`, which starts, bounds and reads that process.
"""

from bespoke_fractal.optimization.forcebalance.run import run_forcebalance

__all__ = ["run_forcebalance"]
