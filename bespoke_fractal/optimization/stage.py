"""The optimisation stage: job description + QC torsion profiles -> bespoke force field.

One ForceBalance fit per molecule, all of its torsion targets together (symmetry-equivalent and
shared parameters are fitted to all their data at once). Every target is then scored against its
QC profile with the initial and the written force field by relaxed MM scans (only the driven
dihedral held; `profiles`), and by the frozen protocol of ForceBalance/BespokeFit for
comparison; a target whose relaxed-scan RMSE the fit made worse keeps the initial force field's
parameters unless asked otherwise. With a QC drive of the parent (``drive_parent``), the parent
is scored the same way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from openff.toolkit import ForceField
from pydantic import BaseModel

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.forcefield import load_force_field
from bespoke_fractal.schema.drives import TorsionDriveResult
from bespoke_fractal.schema.fits import (
    BespokeTorsion,
    OptimizationResult,
    ProfileScore,
    TorsionFitReport,
    TorsionProfile,
    UnfittedTarget,
)
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema

MIN_GRID_COVERAGE = 0.75  # share of a failed drive's grid that must be done to fit to it


class OptimizationError(BespokeFractalError):
    """The optimisation stage could not run (missing or failed QC data, bad input)."""


def forcebalance_directory(output_directory: Path | str, schema_id: str) -> Path:
    """Where :func:`optimize_schema` runs ForceBalance for the job description ``schema_id``."""
    return Path(output_directory) / schema_id / "forcebalance"


def forcebalance_log(output_directory: Path | str, schema_id: str) -> Path:
    """The ForceBalance log of a fit :func:`optimize_schema` runs (read while it runs)."""
    from bespoke_fractal.optimization.forcebalance.run import LOG_NAME

    return forcebalance_directory(output_directory, schema_id) / LOG_NAME


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
    """The QC profile of target ``index`` on its fragment."""
    target = schema.targets[index]
    return profile_from_result(index, schema.fragmentation.fragments[target.fragment].mapped_smiles, result)


def profile_from_result(index: int, mapped_smiles: str, result: TorsionDriveResult) -> TorsionProfile:
    """The QC profile of a drive for target ``index``, energies relative to its lowest grid point;
    ``mapped_smiles`` is the molecule the result's geometries are ordered by."""
    grid = sorted(result.grid, key=lambda point: point.angle)
    lowest = min(point.energy_kcal_mol for point in grid)
    return TorsionProfile(
        target_index=index,
        mapped_smiles=mapped_smiles,
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
    parent_profiles: list[TorsionProfile] | None = None,
) -> OptimizationResult:
    """Fit bespoke torsions of one molecule and write ``<output>/<schema.id>/``.

    ``profiles`` hold the targets to fit; targets in ``unfitted`` (no usable QC) get no bespoke
    parameters and are listed in the result. ``parent_profiles`` (QC drives of the parent, one per
    target at most, in parent atom order) are scored, not fitted. Writes ``force-field.offxml``,
    ``report.json`` and plots under ``plots/``.

    A target keeps its fitted parameters only when they lower its relaxed-scan RMSE (unless
    ``keep_worse``). A fit that stopped without converging keeps, by the same rule, the last
    parameters ForceBalance accepted; with ``optimizer.discard_unconverged`` (BespokeFit's
    behaviour), or when ForceBalance wrote none, the initial force field is written unchanged
    and every target is marked ``kept_initial``. The message says which.
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
        forcebalance_directory(output_directory, schema.id),
        n_cores=n_cores,
        timeout=timeout,
    )
    seconds = time.perf_counter() - start
    fitted = None
    usable = fit.fitted_offxml and (fit.converged or not schema.optimizer.discard_unconverged)
    if usable:
        fitted = ForceField(fit.fitted_offxml, allow_cosmetic_attributes=True, load_plugins=False)
    reports, final = _score(schema, profiles, torsions, initial, fitted, directory, keep_worse)
    if schema.drive_parent:
        reports = _score_parents(schema, reports, parent_profiles or [], initial, final, directory)
    message = fit.message
    if not fit.converged:
        kept = sum(not r.kept_initial for r in reports)
        if fitted is None:
            message += "; no fitted parameters kept" + (" (discard_unconverged)" if fit.fitted_offxml else "")
        else:
            message += (
                f"; kept the last accepted parameters of {kept} of {len(reports)} target(s) "
                "(relaxed-scan RMSE improved), initial parameters for the rest"
            )
    offxml = directory / "force-field.offxml"
    final.to_file(str(offxml), discard_cosmetic_attributes=True)
    result = OptimizationResult(
        schema_id=schema.id,
        smiles=schema.smiles,
        offxml=offxml,
        unfitted=unfitted or [],
        converged=fit.converged,
        iterations=fit.iterations,
        message=message,
        fit_seconds=seconds,
        torsions=reports,
        work_directory=fit.work_directory,
    )
    (directory / "report.json").write_text(result.model_dump_json(indent=2))
    return result


class _Scan(BaseModel):
    """Relaxed and frozen MM profiles of one target with one force field, and their scores."""

    relaxed: list[float]
    frozen: list[float]
    relaxed_score: ProfileScore
    frozen_score: ProfileScore


def _scan(force_field: ForceField, profile: TorsionProfile, schema: BespokeOptimizationSchema) -> _Scan:
    from bespoke_fractal.optimization.profiles import mm_profile, profile_errors

    settings = schema.optimizer.target
    relaxed = mm_profile(force_field, profile, mode="relaxed")
    frozen = mm_profile(force_field, profile, settings.restrain_k, mode="frozen")
    qc, cutoff = profile.energies_kcal_mol, settings.energy_cutoff
    return _Scan(
        relaxed=relaxed,
        frozen=frozen,
        relaxed_score=_scored(profile_errors(qc, relaxed, cutoff)),
        frozen_score=_scored(profile_errors(qc, frozen, cutoff)),
    )


def _ids_of(target_index: int, torsions: list[BespokeTorsion]) -> list[str]:
    return [t.id for t in torsions if target_index in (t.target_indices or [t.target_index])]


def _score(
    schema: BespokeOptimizationSchema,
    profiles: list[TorsionProfile],
    torsions: list[BespokeTorsion],
    initial: ForceField,
    fitted: ForceField | None,
    directory: Path,
    keep_worse: bool,
) -> tuple[list[TorsionFitReport], ForceField]:
    """Per-target scores and plots, and the force field to write.

    Targets whose relaxed-scan RMSE the fitted parameters raise are reverted (unless
    `keep_worse`); since a target's parameters may also apply in another target's fragment, the
    kept ones are scored again with the reverted force field and reverted in turn if that made
    them worse, until none is. Every "after" score is of the force field returned.
    """
    from bespoke_fractal.optimization.plots import plot_profile
    from bespoke_fractal.optimization.profiles import parent_profile, profile_errors, scored_points

    settings = schema.optimizer.target
    cutoff = settings.energy_cutoff
    before = {p.target_index: _scan(initial, p, schema) for p in profiles}
    ids = {p.target_index: _ids_of(p.target_index, torsions) for p in profiles}
    worse: set[int] = set()
    reverted: set[str] = set()
    final, scans = initial, before
    if fitted is not None:
        final = fitted
        scans = {p.target_index: _scan(fitted, p, schema) for p in profiles}
        worse = {i for i, scan in scans.items() if scan.relaxed_score.rmse > before[i].relaxed_score.rmse}
        reverted = set() if keep_worse else {pid for index in worse for pid in ids[index]}
        while reverted:  # each round reverts at least one more target, so it ends
            final = _reverted(fitted, initial, reverted)
            scans = {p.target_index: _scan(final, p, schema) for p in profiles}
            newly = {
                pid
                for i, scan in scans.items()
                if not set(ids[i]) <= reverted and scan.relaxed_score.rmse > before[i].relaxed_score.rmse
                for pid in ids[i]
            }
            if newly <= reverted:
                break
            reverted |= newly
    parent = schema.parent_molecule()
    reports = []
    for profile in profiles:
        index = profile.target_index
        target = schema.targets[index]
        after = scans[index]
        parent_scores = [None, None]
        if target.parent_dihedral is not None:
            for slot, force_field in enumerate((initial, final)):
                mm = parent_profile(force_field, parent, target.parent_dihedral, profile.angles)
                parent_scores[slot] = _scored(profile_errors(profile.energies_kcal_mol, mm, cutoff))
        kept_initial = fitted is None or bool(set(ids[index]) & reverted)
        plot = plot_profile(
            directory / "plots" / f"{_plot_name(schema, index)}.png",
            profile.angles,
            profile.energies_kcal_mol,
            before[index].relaxed,
            after.relaxed if final is not initial else None,
            f"{_plot_name(schema, index)}: {_short(schema)} (fragment)",
            energy_cutoff=cutoff,
            frozen=(before[index].frozen, after.frozen if final is not initial else None),
        )
        qc = profile.energies_kcal_mol
        reports.append(
            TorsionFitReport(
                target_index=index,
                parent_bonds=target.parent_bonds,
                parameter_ids=ids[index],
                angles=profile.angles,
                qc=qc,
                qc_barrier=max(qc) - min(qc),
                scored_points=int(scored_points(qc, cutoff).sum()),
                relaxed_initial=before[index].relaxed,
                relaxed_final=after.relaxed,
                frozen_initial=before[index].frozen,
                frozen_final=after.frozen,
                relaxed_before=before[index].relaxed_score,
                relaxed_after=after.relaxed_score,
                frozen_before=before[index].frozen_score,
                frozen_after=after.frozen_score,
                parent_before=parent_scores[0],
                parent_after=parent_scores[1],
                worse=index in worse,
                kept_initial=kept_initial,
                plot=plot,
            )
        )
    return reports, final


def _score_parents(
    schema: BespokeOptimizationSchema,
    reports: list[TorsionFitReport],
    parent_profiles: list[TorsionProfile],
    initial: ForceField,
    final: ForceField,
    directory: Path,
) -> list[TorsionFitReport]:
    """Add the relaxed-scan scores of the parent's own QC drives (before: initial, after: written).

    A target whose fragment is the whole parent has no second drive: its fragment scores are
    the parent's. A target whose parent drive is missing or failed gets no parent score."""
    from bespoke_fractal.optimization.plots import plot_profile
    from bespoke_fractal.optimization.profiles import mm_profile, profile_errors

    cutoff = schema.optimizer.target.energy_cutoff
    by_target = {p.target_index: p for p in parent_profiles}
    separate = {index for index, _, _ in schema.parent_drives()}
    updated = []
    for report in reports:
        profile = by_target.get(report.target_index)
        if profile is None:
            if report.target_index not in separate:  # the fragment is the parent
                target = schema.targets[report.target_index]
                report = report.model_copy(
                    update={
                        "parent_dihedral": target.parent_dihedral,
                        "parent_angles": report.angles,
                        "parent_qc": report.qc,
                        "parent_relaxed_initial": report.relaxed_initial,
                        "parent_relaxed_final": report.relaxed_final,
                        "parent_relaxed_before": report.relaxed_before,
                        "parent_relaxed_after": report.relaxed_after,
                    }
                )
            updated.append(report)
            continue
        qc = profile.energies_kcal_mol
        mm_before = mm_profile(initial, profile)
        mm_after = mm_profile(final, profile) if final is not initial else mm_before
        name = _plot_name(schema, report.target_index)
        plot = plot_profile(
            directory / "plots" / f"{name}-parent.png",
            profile.angles,
            qc,
            mm_before,
            mm_after if final is not initial else None,
            f"{name}: {_short(schema)} (parent drive)",
            energy_cutoff=cutoff,
        )
        updated.append(
            report.model_copy(
                update={
                    "parent_dihedral": tuple(profile.dihedral),
                    "parent_angles": profile.angles,
                    "parent_qc": qc,
                    "parent_relaxed_initial": mm_before,
                    "parent_relaxed_final": mm_after,
                    "parent_relaxed_before": _scored(profile_errors(qc, mm_before, cutoff)),
                    "parent_relaxed_after": _scored(profile_errors(qc, mm_after, cutoff)),
                    "parent_plot": plot,
                }
            )
        )
    return updated


def _plot_name(schema: BespokeOptimizationSchema, index: int) -> str:
    parent = schema.parent_molecule()
    a, b = schema.targets[index].parent_bond
    return f"t{index}-{parent.atoms[a].symbol}{a}-{parent.atoms[b].symbol}{b}"


def _short(schema: BespokeOptimizationSchema) -> str:
    return schema.smiles if len(schema.smiles) < 60 else schema.id


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
