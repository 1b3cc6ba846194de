"""Settings of the torsion fit: ForceBalance options, priors and the torsion-profile target."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TorsionProfileTarget(BaseModel):
    """How QC torsion profiles enter the ForceBalance objective."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, gt=0, description="weight of the target in the objective")
    energy_denominator: float = Field(
        1.0, gt=0, description="kcal/mol; energy differences are divided by this"
    )
    energy_cutoff: float = Field(
        10.0, gt=0, description="kcal/mol; grid points this far above the minimum get weight 0"
    )
    attenuate_weights: bool = Field(
        True,
        description="weight grid points above energy_denominator by 1/sqrt(denom² + (E - denom)²) "
        "and drop those above energy_cutoff (ForceBalance's `attenuate`)",
    )
    protocol: Literal["relaxed", "frozen"] = Field(
        "relaxed",
        description="how MM geometries are minimised at each QC grid point in the fit: relaxed (only "
        "the driven dihedral held, as geomeTRIC holds it and as MD sees it) or frozen (ForceBalance's "
        "and OpenFF BespokeFit's protocol: dihedral atoms frozen, every atom restrained by restrain_k)",
    )
    restrain_k: float = Field(
        1.0, ge=0, description="kcal/mol/Å² restraint on every atom in the frozen protocol"
    )


class ForceBalanceSettings(BaseModel):
    """ForceBalance optimiser settings (the names follow ForceBalance's own options)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["ForceBalance"] = "ForceBalance"
    max_iterations: int = Field(10, ge=1, description="maximum optimisation steps")
    penalty_type: Literal["L1", "L2"] = "L2"
    job_type: Literal["optimize"] = "optimize"
    step_convergence_threshold: float = Field(0.01, gt=0)
    objective_convergence_threshold: float = Field(0.01, gt=0)
    gradient_convergence_threshold: float = Field(0.01, gt=0)
    n_criteria: int = Field(2, ge=1, le=3, description="criteria that must be met to stop")
    eigenvalue_lower_bound: float = Field(0.01, gt=0)
    finite_difference_h: float = Field(0.01, gt=0)
    penalty_additive: float = Field(1.0, ge=0)
    initial_trust_radius: float = Field(-0.25, description="negative: adaptive trust radius")
    minimum_trust_radius: float = Field(0.05, gt=0)
    error_tolerance: float = Field(
        1.0, ge=0, description="steps that raise the objective by less than this are accepted"
    )
    adaptive_factor: float = Field(0.2, gt=0, description="trust radius change after a good or bad step")
    adaptive_damping: float = Field(1.0, gt=0, description="ties the trust radius to initial_trust_radius")
    normalize_weights: bool = Field(False, description="normalise target weights to sum to 1")
    discard_unconverged: bool = Field(
        False,
        description="a fit that stops without converging keeps no fitted parameter (OpenFF "
        "BespokeFit's behaviour); otherwise each target whose relaxed-scan RMSE improved keeps them",
    )
    torsion_prior: float = Field(
        6.0, gt=0, description="kcal/mol; width of the prior on torsion force constants"
    )
    target: TorsionProfileTarget = Field(default_factory=TorsionProfileTarget)


class SMIRKSSettings(BaseModel):
    """Which bespoke torsion parameters are made."""

    model_config = ConfigDict(extra="forbid")

    expand_torsion_terms: bool = Field(
        True, description="fit periodicities 1-4 for every bespoke torsion, not only the base ones"
    )
    generate_bespoke_terms: bool = Field(
        True, description="new SMIRKS specific to the molecule; off: refit the matching base torsions"
    )
