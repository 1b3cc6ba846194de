"""Programs for QC task processes: the task entry point that applies each QC program's qcengine
fixes (:mod:`~bespoke_fractal.compat.qcengine`) and a classic ``dftd3`` command line for psi4 1.3
(:mod:`~bespoke_fractal.compat.dftd3`, standard library, NumPy and s-dftd3 only)."""
