"""Unit conversions used across the stages (CODATA 2018, as QCElemental)."""

KCAL_PER_HARTREE = 627.509474
BOHR_TO_ANGSTROM = 0.529177210903
