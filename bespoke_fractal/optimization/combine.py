"""One force field for a series: the initial force field plus every job's bespoke torsions, checked.

Appending every job's bespoke ProperTorsions to one force field is not enough: a SMIRKS made
unique within molecule K can also match a torsion of molecule J, and in SMIRNOFF the last match
wins, so J's torsion would silently change. Here every molecule is labelled with the combined
force field and each of its proper torsions must get the same parameter values its own force field
gave it. Where a parameter of K captures a torsion of J:

- same drive (both parameters were fitted to the same fragment QC drive, same identity key): the
  torsion is truly shared, and both molecules get the earliest job's parameter (jobs are added in
  reverse order, so the earliest job's parameters win); J's superseded parameter is removed when
  it wins nowhere, so the drive has one parameter;
- otherwise K's SMIRKS is made more specific: its tagged atoms get recursive SMARTS of K's own
  environment around them, one bond deeper each round (up to the whole molecule); if that cannot
  tell the two torsions apart, J's parameter is moved after K's; if that fails too, `CombineError`
  names the molecules and the torsion, and nothing is written.

Bespoke ids are prefixed with the job id (``j<id>-``) so that two jobs' ids cannot collide. The
report gives, per molecule and fitted torsion, the ids it has in the combined force field, what
was done, and the relaxed MM scan RMSE of the parent (`profiles.parent_profile`, as the fit
report's ``parent_before/after``) against the target's QC profile with its own and the combined
force field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from openff.toolkit import ForceField, Molecule
from openff.units import unit
from pydantic import BaseModel, Field

from bespoke_fractal.errors import BespokeFractalError
from bespoke_fractal.optimization.smirks import (
    _TOOLKIT,
    Quartet,
    _atom_primitives,
    _atom_smarts,
    _bond_primitives,
    _bond_smarts,
    _canonical,
    _Side,
    _terms,
    _write_smarts,
)
from bespoke_fractal.schema.fragments import Bond
from bespoke_fractal.schema.identity import Dihedral

MAX_ROUNDS = 200
Scan = Literal["changed", "all", "none"]
Values = tuple[tuple[int, float, float, float], ...]


class CombineError(BespokeFractalError):
    """The jobs cannot be combined into one force field without changing a molecule's torsions."""


# ---- input -----------------------------------------------------------------------------------


class CombineTorsion(BaseModel):
    """One fitted target torsion of a job."""

    target_index: int
    parent_bonds: list[Bond]
    parameter_ids: list[str]
    drive_key: str = Field(description="identity key of the fragment drive (or a hash of its QC profile)")
    kept_initial: bool = False
    angles: list[int] = Field(default_factory=list)
    qc: list[float] = Field(default_factory=list, description="QC profile, kcal/mol")
    parent_dihedral: Dihedral | None = Field(None, description="parent dihedral scanned for the RMSE")


class CombineJob(BaseModel):
    """A fitted job: its parent molecule, written force field and fitted torsions."""

    id: str
    name: str
    smiles: str = Field(description="mapped SMILES of the parent")
    offxml: str = Field(description="the job's force field, OFFXML text")
    torsions: list[CombineTorsion]
    energy_cutoff: float = 10.0

    @classmethod
    def from_output(cls, output, schema=None) -> CombineJob:
        """From a job's `BespokeExecutorOutput` and, when known, its job description (for the
        drives' identity keys, the parent dihedrals and the energy cutoff). Without the job
        description a drive is known by a hash of its QC profile."""
        if output.status != "success" or output.results is None or output.offxml is None:
            raise CombineError(f"job {output.id} ({output.name}) has no fitted force field ({output.status})")
        torsions = []
        for report in output.results.torsions:
            target = schema.targets[report.target_index] if schema is not None else None
            if target is not None:
                key, dihedral = target.identity.key, target.parent_dihedral
            else:
                data = json.dumps([report.angles, [round(e, 5) for e in report.qc]])
                key, dihedral = "qc:" + hashlib.sha256(data.encode()).hexdigest()[:16], report.parent_dihedral
            torsions.append(
                CombineTorsion(
                    target_index=report.target_index,
                    parent_bonds=report.parent_bonds,
                    parameter_ids=report.parameter_ids,
                    drive_key=key,
                    kept_initial=report.kept_initial,
                    angles=report.angles,
                    qc=report.qc,
                    parent_dihedral=dihedral,
                )
            )
        cutoff = schema.optimizer.target.energy_cutoff if schema is not None else 10.0
        return cls(
            id=str(output.id),
            name=output.name,
            smiles=output.smiles,
            offxml=output.offxml,
            torsions=torsions,
            energy_cutoff=cutoff,
        )


# ---- report ----------------------------------------------------------------------------------


class CombinedTorsion(BaseModel):
    """One fitted torsion of one molecule in the combined force field."""

    target_index: int
    parent_bonds: list[Bond]
    own_ids: list[str] = Field(description="ids in the job's own force field")
    combined_ids: list[str] = Field(description="ids its quartets get in the combined force field")
    action: Literal["kept", "made specific", "reordered", "shared", "initial"]
    note: str = ""
    dihedral: Dihedral | None = None
    rmse_own: float | None = Field(None, description="relaxed parent scan vs QC, own force field, kcal/mol")
    rmse_combined: float | None = Field(None, description="the same with the combined force field")
    scanned: bool = Field(False, description="combined scan run (else equal by identical parameters)")


class CombinedMolecule(BaseModel):
    job_id: str
    name: str
    smiles: str
    identical: bool = Field(description="every proper torsion gets its own force field's values")
    torsions: list[CombinedTorsion]


class CombineReport(BaseModel):
    """What `combine_jobs` did."""

    output: Path | None = None
    jobs: list[str]
    bespoke_parameters: int = Field(description="bespoke ProperTorsions in the combined force field")
    id_map: dict[str, str] = Field(description="'<job>:<own id>' -> id in the combined force field")
    removed: dict[str, str] = Field(
        default_factory=dict, description="'<job>:<own id>' -> why it is not in the combined force field"
    )
    actions: list[str] = Field(default_factory=list, description="conflicts found and how they were resolved")
    rounds: int
    molecules: list[CombinedMolecule]


# ---- the parameters --------------------------------------------------------------------------


@dataclass
class _Entry:
    """One job's bespoke parameter in the combined force field."""

    job: int
    own_id: str
    new_id: str
    smirks: str
    terms: dict
    values: Values
    drives: set[str]
    depth: int = 0
    original: str = ""
    reordered: bool = False
    notes: list[str] = field(default_factory=list)


def _values(parameter) -> Values:
    periodicity, phase, k, idivf = _terms(parameter, expand=False)
    return tuple(
        sorted(
            (int(n), round(p % 360.0, 6), round(kk, 8), round(d, 6))
            for n, p, kk, d in zip(periodicity, phase, k, idivf, strict=True)
        )
    )


def _load(offxml: str) -> ForceField:
    return ForceField(offxml, load_plugins=False, allow_cosmetic_attributes=True)


def _split(job: CombineJob) -> tuple[str, list]:
    """(the job's initial force field as OFFXML, its bespoke ProperTorsions in order)."""
    own = _load(job.offxml)
    ids = {pid for t in job.torsions if not t.kept_initial for pid in t.parameter_ids}
    handler = own.get_parameter_handler("ProperTorsions")
    bespoke = [p for p in handler.parameters if p.id in ids]
    rest = {p.smirks for p in handler.parameters if p.id not in ids}
    for parameter in bespoke:
        if parameter.smirks in rest:
            raise CombineError(
                f"job {job.id}: parameter {parameter.id} refits an initial parameter in place "
                "(generate_bespoke_terms off); only bespoke SMIRKS can be combined"
            )
    for index in reversed([i for i, p in enumerate(handler.parameters) if p.id in ids]):
        del handler.parameters[index]
    return own.to_string(), bespoke


def _build(base: str, entries: list[_Entry]) -> ForceField:
    """Base force field + entries in order; of entries with one SMIRKS only the last (the one
    that would win) is added."""
    force_field = _load(base)
    handler = force_field.get_parameter_handler("ProperTorsions")
    last = {e.smirks: e for e in entries}
    for entry in entries:
        if last[entry.smirks] is entry:
            handler.add_parameter({"smirks": entry.smirks, "id": entry.new_id, **entry.terms})
    return force_field


def _labels(force_field: ForceField, molecule: Molecule) -> dict[Quartet, object]:
    labels = force_field.label_molecules(molecule.to_topology())[0]["ProperTorsions"]
    return {_canonical(key): parameter for key, parameter in labels.items()}


def _environment(side: _Side, atom: int, depth: int) -> str:
    """Recursive-SMARTS body: `atom` and the heavy atoms of `side` within `depth` bonds."""
    nodes, level = [atom], {atom: 0}
    queue = [atom]
    while queue:
        current = queue.pop(0)
        if level[current] >= depth:
            continue
        for other in side.neighbours(current):
            if other not in level and side.heavy(other):
                level[other] = level[current] + 1
                nodes.append(other)
                queue.append(other)
    index = {a: n for n, a in enumerate(nodes)}
    labels = [_atom_smarts([_atom_primitives(side.rdmol.GetAtomWithIdx(a))]) for a in nodes]
    bonds = {}
    for u, a in enumerate(nodes):
        for b in side.neighbours(a):
            v = index.get(b)
            if v is not None and v > u:
                bonds[(u, v)] = _bond_smarts([_bond_primitives(side.bond(a, b))])
    return _write_smarts(labels, bonds) if bonds else labels[0]


def _specific(smirks: str, served: list[tuple[_Side, set[Quartet]]], depth: int) -> str:
    """`smirks` with each tagged atom also required to have its environment (to `depth` bonds)
    in one of the quartets it serves (per molecule: the quartets it is kept for)."""
    found: dict[int, set[str]] = {tag: set() for tag in range(1, 5)}
    for side, quartets in served:
        for match in _TOOLKIT._find_smarts_matches(side.rdmol, smirks):
            if _canonical(match) in quartets:
                for tag in range(1, 5):
                    found[tag].add(_environment(side, match[tag - 1], depth))
    environments = {tag: ",".join(f"$({e})" for e in sorted(values)) for tag, values in found.items()}
    return re.sub(r":([1-4])\]", lambda m: f";{environments[int(m.group(1))]}:{m.group(1)}]", smirks)


# ---- combining -------------------------------------------------------------------------------


@dataclass
class _Molecule:
    job: CombineJob
    molecule: Molecule
    side: _Side
    reference: dict[Quartet, tuple[str, Values]]  # own force field: quartet -> (id, values)


def combine_jobs(
    jobs: list[CombineJob], output_path: str | Path | None = None, scan: Scan = "changed"
) -> tuple[ForceField, CombineReport]:
    """Combine fitted jobs into one force field (written to `output_path`, with the report as
    ``<stem>.combine.json`` beside it, only when every molecule checks out).

    `scan`: ``changed`` runs the combined relaxed scan only for molecules whose torsion
    parameters changed (the others are equal by construction), ``all`` for every molecule,
    ``none`` runs no scan."""
    if not jobs:
        raise CombineError("nothing to combine: no jobs given")
    if len({job.id for job in jobs}) != len(jobs):
        raise CombineError("a job is given twice")
    bases, entries = [], []
    for number, job in enumerate(jobs):
        base, bespoke = _split(job)
        bases.append(base)
        drives = {p.id: {t.drive_key for t in job.torsions if p.id in t.parameter_ids} for p in bespoke}
        for parameter in bespoke:
            periodicity, phase, k, idivf = _terms(parameter, expand=False)
            terms = {
                "periodicity": periodicity,
                "phase": [value * unit.degree for value in phase],
                "k": [value * unit.kilocalorie_per_mole for value in k],
                "idivf": idivf,
            }
            entries.append(
                _Entry(
                    job=number,
                    own_id=parameter.id,
                    new_id=f"j{job.id}-{parameter.id}",
                    smirks=parameter.smirks,
                    original=parameter.smirks,
                    terms=terms,
                    values=_values(parameter),
                    drives=drives[parameter.id],
                )
            )
        if base != bases[0]:
            raise CombineError(
                f"jobs {jobs[0].id} ({jobs[0].name}) and {job.id} ({job.name}) were fitted from "
                "different initial force fields; combine only jobs of one workflow"
            )
    # the earliest job's parameters last: they win where several jobs' parameters match
    entries.sort(key=lambda e: -e.job)
    by_new = {e.new_id: e for e in entries}
    by_own = {(e.job, e.own_id): e for e in entries}
    molecules = []
    for job in jobs:
        molecule = Molecule.from_mapped_smiles(job.smiles, allow_undefined_stereo=True)
        reference = {q: (p.id, _values(p)) for q, p in _labels(_load(job.offxml), molecule).items()}
        molecules.append(_Molecule(job, molecule, _Side.of(molecule), reference))
    own_quartets = {
        id(e): {q for q, (pid, _) in molecules[e.job].reference.items() if pid == e.own_id} for e in entries
    }
    actions = _widen_shared(entries, molecules, own_quartets, jobs)
    swapped: set[tuple[str, str]] = set()
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise CombineError(f"cannot combine: conflicts remain after {MAX_ROUNDS} rounds")
        force_field = _build(bases[0], entries)
        labels = [_labels(force_field, m.molecule) for m in molecules]
        conflicts: dict[int, tuple[_Entry, int, Quartet, _Entry | None]] = {}
        served: dict[int, dict[int, set[Quartet]]] = defaultdict(lambda: defaultdict(set))
        for number, (m, label) in enumerate(zip(molecules, labels, strict=True)):
            for quartet, parameter in label.items():
                own_id, own_values = m.reference[quartet]
                capturing = by_new.get(parameter.id)
                if _values(parameter) == own_values:
                    if capturing is not None:
                        served[id(capturing)][number].add(quartet)
                    continue
                own = by_own.get((number, own_id))
                if capturing is None:
                    raise CombineError(
                        f"{m.job.name}: torsion {quartet} gets initial parameter {parameter.id}"
                    )
                if own is not None and capturing.drives & own.drives and capturing.job < number:
                    served[id(capturing)][number].add(quartet)
                    continue  # the same drive: shared with the earlier job
                conflicts.setdefault(id(capturing), (capturing, number, quartet, own))
        if not conflicts:
            break
        for capturing, number, quartet, own in conflicts.values():
            where = (
                f"{jobs[capturing.job].name} parameter {capturing.own_id} captures torsion "
                f"{quartet} of {jobs[number].name}"
            )
            k_side = molecules[capturing.job].side
            # the own parameter goes last when it cannot take the capturing one's torsions
            reorder = own is not None and (own.new_id, capturing.new_id) not in swapped
            if reorder and not own_quartets[id(capturing)] & k_side.matches(own.smirks):
                _move_after(entries, own, capturing, swapped)
                actions.append(f"{where}: {own.new_id} moved after it")
                continue
            keep = [(molecules[n].side, quartets) for n, quartets in served[id(capturing)].items()]
            keep = keep or [(k_side, own_quartets[id(capturing)])]
            smirks = capturing.smirks
            while capturing.depth < max(side.molecule.n_atoms for side, _ in keep):
                capturing.depth += 1
                smirks = _specific(capturing.original, keep, capturing.depth)
                if smirks != capturing.smirks and quartet not in molecules[number].side.matches(smirks):
                    break
            if quartet not in molecules[number].side.matches(smirks):
                if any(not quartets <= side.matches(smirks) for side, quartets in keep):
                    raise CombineError(f"{where}: the specific SMIRKS {smirks} lost its own torsions")
                capturing.smirks = smirks
                note = f"environments {capturing.depth} bonds deep of the torsions it serves"
                capturing.notes.append(f"{capturing.new_id}: {note}, no longer matches {jobs[number].name}")
                actions.append(f"{where}: {capturing.new_id} made specific ({note})")
                continue
            if reorder:
                _move_after(entries, own, capturing, swapped)
                actions.append(f"{where}: {own.new_id} moved after it")
                continue
            raise CombineError(f"cannot combine: {where} and no SMIRKS of its own molecule tells them apart")
    # parameters that win nowhere (superseded by a shared one) are dropped
    winners = {p.id for label in labels for p in label.values()}
    removed = {}
    for entry in list(entries):
        if entry.new_id not in winners:
            entries.remove(entry)
            removed[f"{jobs[entry.job].id}:{entry.own_id}"] = "wins no torsion of the series (superseded)"
    force_field = _build(bases[0], entries)
    labels = [_labels(force_field, m.molecule) for m in molecules]
    report_molecules = [
        _report_molecule(number, m, label, by_new, by_own, jobs, scan, force_field)
        for number, (m, label) in enumerate(zip(molecules, labels, strict=True))
    ]
    report = CombineReport(
        output=Path(output_path).absolute() if output_path is not None else None,
        jobs=[job.id for job in jobs],
        bespoke_parameters=len({e.smirks for e in entries}),
        id_map={f"{jobs[e.job].id}:{e.own_id}": e.new_id for e in entries},
        removed=removed,
        actions=actions,
        rounds=rounds,
        molecules=report_molecules,
    )
    if output_path is not None:
        write_combined(force_field, report, output_path)
    return force_field, report


def _move_after(entries: list[_Entry], own: _Entry, capturing: _Entry, swapped: set) -> None:
    swapped.add((own.new_id, capturing.new_id))
    entries.remove(own)
    entries.insert(entries.index(capturing) + 1, own)
    own.reordered = True
    own.notes.append(f"{own.new_id} moved after {capturing.new_id}")


def _widen_shared(
    entries: list[_Entry], molecules: list[_Molecule], own_quartets: dict[int, set[Quartet]], jobs
) -> list[str]:
    """One parameter per class of a shared drive: an earlier job's parameter takes the SMIRKS of
    a later job's parameter of the same drive when that SMIRKS matches, in the earlier job's
    molecule, exactly the earlier parameter's torsions (it is the same class, written for a wider
    series); it then wins in both molecules and the later one is superseded."""
    actions = []
    for earlier in sorted(entries, key=lambda e: e.job):
        for later in sorted(entries, key=lambda e: e.job):
            if (
                later.job <= earlier.job
                or not later.drives & earlier.drives
                or later.smirks == earlier.smirks
            ):
                continue
            if molecules[earlier.job].side.matches(later.smirks) == own_quartets[id(earlier)]:
                actions.append(
                    f"{earlier.new_id} takes the SMIRKS of {later.new_id} (same drive "
                    f"{sorted(later.drives & earlier.drives)[0][-24:]}, job {jobs[earlier.job].id}'s fit)"
                )
                earlier.smirks = earlier.original = later.smirks
                break
    return actions


def _report_molecule(number, m, label, by_new, by_own, jobs, scan, force_field) -> CombinedMolecule:
    identical = all(_values(p) == m.reference[q][1] for q, p in label.items())
    own_ff = None
    torsions = []
    for torsion in m.job.torsions:
        quartets = {_canonical(q) for bond in torsion.parent_bonds for q in m.side.quartets(tuple(bond))}
        own_ids = sorted({m.reference[q][0] for q in quartets})
        combined = sorted({label[q].id for q in quartets})
        entries = [by_new[i] for i in combined if i in by_new]
        shared = sorted({jobs[e.job].id for e in entries if e.job != number})
        if torsion.kept_initial:
            action, note = "initial", "the fit was not kept: initial parameters"
        elif shared:
            action = "shared"
            note = f"shared with job {', '.join(shared)} (same fragment drive, earliest job's fit)"
        elif any(e.depth for e in entries):
            action, note = "made specific", "; ".join(n for e in entries for n in e.notes)
        elif any(e.reordered for e in entries):
            action, note = "reordered", "; ".join(n for e in entries for n in e.notes)
        else:
            action, note = "kept", ""
        changed = any(_values(label[q]) != m.reference[q][1] for q in quartets)
        if changed and not shared:  # checked above: cannot happen
            raise CombineError(f"{m.job.name}: torsion {torsion.parent_bonds} changed")
        report = CombinedTorsion(
            target_index=torsion.target_index,
            parent_bonds=torsion.parent_bonds,
            own_ids=own_ids,
            combined_ids=combined,
            action=action,
            note=note,
        )
        if scan != "none" and torsion.angles:
            from bespoke_fractal.optimization.profiles import parent_profile, profile_errors
            from bespoke_fractal.schema.identity import default_dihedral

            dihedral = torsion.parent_dihedral or default_dihedral(m.molecule, tuple(torsion.parent_bonds[0]))
            own_ff = own_ff or _load(m.job.offxml)
            cutoff = m.job.energy_cutoff

            def rmse(ff: ForceField, dihedral=dihedral, torsion=torsion, cutoff=cutoff) -> float:
                mm = parent_profile(ff, m.molecule, dihedral, torsion.angles)
                return profile_errors(torsion.qc, mm, cutoff)[0]

            report.dihedral = tuple(dihedral)
            report.rmse_own = rmse(own_ff)
            report.scanned = scan == "all" or not identical
            report.rmse_combined = rmse(force_field) if report.scanned else report.rmse_own
        torsions.append(report)
    return CombinedMolecule(
        job_id=m.job.id, name=m.job.name, smiles=m.job.smiles, identical=identical, torsions=torsions
    )


def report_path(output_path: str | Path) -> Path:
    """Where the report of a combined force field is written: ``<stem>.combine.json`` beside it."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".combine.json")


def write_combined(force_field: ForceField, report: CombineReport, output_path: str | Path) -> list[Path]:
    """Write the force field and its report; returns both paths."""
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    force_field.to_file(str(output_path), discard_cosmetic_attributes=True)
    path = report_path(output_path)
    path.write_text(report.model_dump_json(indent=2) + "\n")
    return [output_path, path]
