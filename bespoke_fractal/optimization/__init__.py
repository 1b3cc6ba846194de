"""The optimisation stage: fitting bespoke torsion parameters to QC torsion profiles."""

from bespoke_fractal.schema.optimizers import ForceBalanceSettings, SMIRKSSettings, TorsionProfileTarget

__all__ = ["ForceBalanceSettings", "SMIRKSSettings", "TorsionProfileTarget"]
