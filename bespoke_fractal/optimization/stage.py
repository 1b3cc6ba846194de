"""The optimisation stage: job description + QC torsion profiles -> bespoke force field.

One ForceBalance fit per molecule, all of its torsion targets together (symmetry-equivalent and
shared parameters are fitted to all their data at once). Every target is then scored against its
QC profile with the initial and the fitted force field, on the fragment and on the parent; a
target the fit made worse keeps the initial force field's parameters unless asked otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from openff.toolkit import ForceField
from pydantic import BaseModel, Field

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.forcefield import load_force_field
from bespoke_fractal.fragmentation.models import Bond
from bespoke_fractal.optimization.models import BespokeTorsion, TorsionProfile
from bespoke_fractal.qc.torsiondrive import TorsionDriveResult
from bespoke_fractal.workflow.schema import BespokeOptimizationSchema

MIN_GRID_COVERAGE = 0.75  # share of a failed drive's grid that must be done to fit to it


class OptimizationError(BespokeFractalError):
    """The optimisation stage could not run (missing or failed QC data, bad input)."""


class UnfittedTarget(BaseModel):
    """A target torsion left with the initial force field's parameters, and why."""

    target_index: int
    parent_bonds: list[Bond]
    reason: str


class ProfileScore(BaseModel):
    """RMSE and largest error (kcal/mol) of an MM torsion profile against QC."""

    rmse: float
    max_error: float


class TorsionFitReport(BaseModel):
    """How one target torsion came out of the fit."""

    target_index: int
    parent_bonds: list[Bond]
    parameter_ids: list[str]
    angles: list[int]
    qc: list[float] = Field(description="QC profile, kcal/mol relative")
    initial: list[float] = Field(description="MM profile with the initial force field, on the fragment")
    fitted: list[float] = Field(description="MM profile with the fitted force field, on the fragment")
    fragment_before: ProfileScore
    fragment_after: ProfileScore
    parent_before: ProfileScore | None = None
    parent_after: ProfileScore | None = None
    worse: bool = Field(False, description="the fit raised this torsion's fragment RMSE")
    kept_initial: bool = Field(False, description="initial parameters kept because the fit was worse")
    plot: Path | None = None


class OptimizationResult(BaseModel):
    """The outcome of fitting one molecule."""

    schema_id: str
    smiles: str
    offxml: Path | None = Field(None, description="initial force field + bespoke torsions")
    converged: bool
    iterations: int
    message: str = ""
    fit_seconds: float
    torsions: list[TorsionFitReport] = Field(default_factory=list)
    unfitted: list[UnfittedTarget] = Field(
        default_factory=list, description="targets left with the initial parameters (no usable QC), and why"
    )
    work_directory: Path | None = Field(None, description="ForceBalance's directory, kept on failure")

    @property
    def mean_rmse_before(self) -> float:
        return sum(t.fragment_before.rmse for t in self.torsions) / max(len(self.torsions), 1)

    @property
    def mean_rmse_after(self) -> float:
        scores = [t.fragment_before if t.kept_initial else t.fragment_after for t in self.torsions]
        return sum(s.rmse for s in scores) / max(len(scores), 1)


def usable_profiles(
    schema: BespokeOptimizationSchema,
    results: Mapping[tuple[str, str], TorsionDriveResult],
    min_coverage: float = MIN_GRID_COVERAGE,
) -> tuple[list[TorsionProfile], list[UnfittedTarget]]:
    """QC profiles of the targets whose drive is usable, and the targets that cannot be fitted.

    Results are keyed by (dataset name, torsion identity key). A drive that failed part-way is
    used when at least ``min_coverage`` of its grid completed.
    """
    profiles, unfitted = [], []
    for index, target in enumerate(schema.targets):
        result = results.get((schema.qc_spec.dataset_name, target.identity.key))
        reason = None
        if result is None:
            reason = f"no QC result ({target.identity.key})"
        elif not result.usable(min_coverage):
            done = f", {len(result.grid)} of {len(result.grid) + len(result.missing_angles)} grid points"
            partial = done if result.missing_angles else ""
            reason = f"QC drive {result.record_id} failed{partial}: {result.error}"
        if reason is not None:
            unfitted.append(
                UnfittedTarget(target_index=index, parent_bonds=target.parent_bonds, reason=reason)
            )
            continue
        profiles.append(_profile(schema, index, result))
    return profiles, unfitted


def profiles_from_results(
    schema: BespokeOptimizationSchema, results: Mapping[tuple[str, str], TorsionDriveResult]
) -> list[TorsionProfile]:
    """One QC profile per target; raises OptimizationError unless every drive is complete."""
    profiles, unfitted = usable_profiles(schema, results, min_coverage=1.0)
    if unfitted:
        raise OptimizationError(f"{schema.id}: target {unfitted[0].target_index}: {unfitted[0].reason}")
    return profiles


def _profile(schema: BespokeOptimizationSchema, index: int, result: TorsionDriveResult) -> TorsionProfile:
    """The QC profile of target ``index``, energies relative to its lowest grid point."""
    target = schema.targets[index]
    fragment = schema.fragmentation.fragments[target.fragment]
    grid = sorted(result.grid, key=lambda point: point.angle)
    lowest = min(point.energy_kcal_mol for point in grid)
    return TorsionProfile(
        target_index=index,
        mapped_smiles=fragment.mapped_smiles,
        dihedral=result.driven_dihedral,
        angles=[point.angle for point in grid],
        energies_kcal_mol=[point.energy_kcal_mol - lowest for point in grid],
        geometries_angstrom=[point.geometry_angstrom for point in grid],
    )


def optimize_schema(
    schema: BespokeOptimizationSchema,
    profiles: list[TorsionProfile],
    output_directory: Path | str,
    n_cores: int = 1,
    timeout: float = 3600.0,
    keep_worse: bool = False,
    unfitted: list[UnfittedTarget] | None = None,
) -> OptimizationResult:
    """Fit bespoke torsions of one molecule and write ``<output>/<schema.id>/``.

    ``profiles`` hold the targets to fit; targets in ``unfitted`` (no usable QC) get no bespoke
    parameters and are listed in the result. Writes ``force-field.offxml``, ``report.json`` and
    one PNG per fitted torsion under ``plots/``. When the fit does not converge the force field
    written is the initial one (no bespoke torsions), every target is marked ``kept_initial``
    and the message says why.
    """
    from bespoke_fractal.optimization.forcebalance import run_forcebalance
    from bespoke_fractal.optimization.smirks import add_bespoke_torsions, bespoke_torsions

    directory = Path(output_directory) / schema.id
    directory.mkdir(parents=True, exist_ok=True)
    if not profiles:
        raise OptimizationError(f"{schema.id}: no target torsion has usable QC data")
    initial = load_force_field(schema.initial_force_field)
    fitted_targets = {profile.target_index for profile in profiles}
    # a parameter shared by several targets comes from one drive, so they are all fitted or none
    torsions = [
        t
        for t in bespoke_torsions(schema, initial)
        if set(t.target_indices or [t.target_index]) <= fitted_targets
    ]
    start_force_field = add_bespoke_torsions(initial, torsions)
    start = time.perf_counter()
    fit = run_forcebalance(
        start_force_field,
        [t.id for t in torsions],
        profiles,
        schema.optimizer,
        directory / "forcebalance",
        n_cores=n_cores,
        timeout=timeout,
    )
    seconds = time.perf_counter() - start
    result = OptimizationResult(
        schema_id=schema.id,
        smiles=schema.smiles,
        unfitted=unfitted or [],
        converged=fit.converged,
        iterations=fit.iterations,
        message=fit.message,
        fit_seconds=seconds,
        work_directory=fit.work_directory,
    )
    fitted = None
    if fit.converged and fit.fitted_offxml:
        fitted = ForceField(fit.fitted_offxml, allow_cosmetic_attributes=True, load_plugins=False)
    reports, final = _score(schema, profiles, torsions, initial, fitted, directory, keep_worse)
    offxml = directory / "force-field.offxml"
    final.to_file(str(offxml), discard_cosmetic_attributes=True)
    result = result.model_copy(update={"torsions": reports, "offxml": offxml})
    (directory / "report.json").write_text(result.model_dump_json(indent=2))
    return result


def _score(
    schema: BespokeOptimizationSchema,
    profiles: list[TorsionProfile],
    torsions: list[BespokeTorsion],
    initial: ForceField,
    fitted: ForceField | None,
    directory: Path,
    keep_worse: bool,
) -> tuple[list[TorsionFitReport], ForceField]:
    """Per-target scores and plots; returns the force field with worse targets reverted
    (the initial force field when there is no fit)."""
    from bespoke_fractal.optimization.plots import plot_profile
    from bespoke_fractal.optimization.profiles import mm_profile, parent_profile, profile_errors

    settings = schema.optimizer.target
    parent = schema.parent_molecule()
    reports = []
    reverted: set[str] = set()
    for profile in profiles:
        target = schema.targets[profile.target_index]
        ids = [t.id for t in torsions if profile.target_index in (t.target_indices or [t.target_index])]
        before = mm_profile(initial, profile, settings.restrain_k)
        after = mm_profile(fitted, profile, settings.restrain_k) if fitted is not None else before
        cutoff = settings.energy_cutoff
        fragment_before = _scored(profile_errors(profile.energies_kcal_mol, before, cutoff))
        fragment_after = _scored(profile_errors(profile.energies_kcal_mol, after, cutoff))
        parent_scores = [None, None]
        if target.parent_dihedral is not None:
            for slot, force_field in enumerate((initial, fitted or initial)):
                mm = parent_profile(force_field, parent, target.parent_dihedral, profile.angles)
                parent_scores[slot] = _scored(profile_errors(profile.energies_kcal_mol, mm, cutoff))
        worse = fragment_after.rmse > fragment_before.rmse
        if worse and not keep_worse:
            reverted.update(ids)
        a, b = target.parent_bond
        name = f"t{profile.target_index}-{parent.atoms[a].symbol}{a}-{parent.atoms[b].symbol}{b}"
        plot = plot_profile(
            directory / "plots" / f"{name}.png",
            profile.angles,
            profile.energies_kcal_mol,
            before,
            after,
            f"{name}: {schema.smiles if len(schema.smiles) < 60 else schema.id}",
        )
        reports.append(
            TorsionFitReport(
                target_index=profile.target_index,
                parent_bonds=target.parent_bonds,
                parameter_ids=ids,
                angles=profile.angles,
                qc=profile.energies_kcal_mol,
                initial=before,
                fitted=after,
                fragment_before=fragment_before,
                fragment_after=fragment_after,
                parent_before=parent_scores[0],
                parent_after=parent_scores[1],
                worse=worse,
                kept_initial=fitted is None,
                plot=plot,
            )
        )
    if fitted is None:
        return reports, initial
    # a parameter shared by several targets is reverted for all of them if one got worse
    reports = [r.model_copy(update={"kept_initial": bool(reverted & set(r.parameter_ids))}) for r in reports]
    return reports, (_reverted(fitted, initial, reverted) if reverted else fitted)


def _scored(errors: tuple[float, float]) -> ProfileScore:
    rmse, max_error = errors
    return ProfileScore(rmse=rmse, max_error=max_error)


def _reverted(fitted: ForceField, initial: ForceField, ids: set[str]) -> ForceField:
    """A copy of `fitted` where the ProperTorsions `ids` are as in `initial`: bespoke
    parameters are removed, refitted base parameters get their initial values back."""
    copy = ForceField(fitted.to_string(), allow_cosmetic_attributes=True, load_plugins=False)
    parameters = copy.get_parameter_handler("ProperTorsions").parameters
    originals = {p.id: p for p in initial.get_parameter_handler("ProperTorsions").parameters if p.id in ids}
    for index in reversed([i for i, p in enumerate(parameters) if p.id in ids]):
        original = originals.get(parameters[index].id)
        if original is None:
            del parameters[index]
        else:
            for field in ("periodicity", "phase", "k", "idivf"):
                value = getattr(original, field, None)
                if value is not None:
                    setattr(parameters[index], field, value)
    return copy


def write_summary(results: list[OptimizationResult], path: Path) -> Path:
    """All molecules' scores in one JSON file."""
    path.write_text(json.dumps([r.model_dump(mode="json") for r in results], indent=2))
    return path
