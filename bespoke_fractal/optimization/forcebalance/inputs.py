"""The ForceBalance job directory of a torsion fit.

Layout (the one OpenFF BespokeFit writes)::

    optimize.in                       options, priors, one $target per profile
    forcefield/force-field.offxml     parameters to fit marked parameterize="k1, k2, ..."
    targets/torsion-<n>/input.sdf     the fragment (bond orders, formal charges)
                        conf.pdb      the same atoms with CONECT records (OpenMM topology)
                        scan.xyz      one frame per grid point, Å
                        qdata.txt     QC energy per frame, Hartree
                        metadata.json driven dihedral and grid id of each frame
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path

from openff.toolkit import ForceField, Molecule

from bespoke_fractal.optimization.forcebalance.relaxed import TARGET_TYPE as RELAXED_TARGET_TYPE
from bespoke_fractal.schema.fits import TorsionProfile
from bespoke_fractal.schema.optimizers import ForceBalanceSettings

FORCE_FIELD_NAME = "force-field.offxml"
INPUT_NAME = "optimize.in"
# ForceBalance converts qdata.txt energies to kcal/mol with eqcgmx / 4.184 (eqcgmx = 2625.5002 kJ/mol
# per Hartree); the inverse is used here so the kcal/mol values round-trip exactly.
KCAL_MOL_PER_HARTREE = 2625.5002 / 4.184
TORSION_PRIOR_KEY = "ProperTorsions/Proper/k"


def target_name(index: int, profile: TorsionProfile) -> str:
    """The ForceBalance target (and directory) name of the `index`-th profile."""
    return f"torsion-{index}-target{profile.target_index}"


def write_job(
    directory: Path,
    force_field: ForceField,
    parameter_ids: list[str],
    profiles: list[TorsionProfile],
    settings: ForceBalanceSettings,
) -> list[str]:
    """Write the whole job into `directory` (created); return the target names."""
    check_job(force_field, parameter_ids, profiles)
    directory.mkdir(parents=True, exist_ok=True)
    write_force_field(directory / "forcefield" / FORCE_FIELD_NAME, force_field, parameter_ids)
    names = []
    for index, profile in enumerate(profiles):
        name = target_name(index, profile)
        write_target(directory / "targets" / name, profile, settings)
        names.append(name)
    (directory / INPUT_NAME).write_text(optimize_in(settings, names))
    return names


def check_job(force_field: ForceField, parameter_ids: list[str], profiles: list[TorsionProfile]) -> None:
    """Raise ValueError unless there is something to fit and every id names a ProperTorsions parameter."""
    if not parameter_ids:
        raise ValueError("no parameters to fit")
    if not profiles:
        raise ValueError("no torsion profiles to fit to")
    handler = force_field.get_parameter_handler("ProperTorsions")
    known = {parameter.id for parameter in handler.parameters}
    missing = [pid for pid in parameter_ids if pid not in known]
    if missing:
        raise ValueError(f"no ProperTorsions parameter with id {', '.join(missing)}")
    duplicated = [pid for pid, n in Counter(parameter_ids).items() if n > 1]
    if duplicated:
        raise ValueError(f"parameter ids given more than once: {', '.join(duplicated)}")
    for profile in profiles:
        n = len(profile.angles)
        if not n or not (n == len(profile.energies_kcal_mol) == len(profile.geometries_angstrom)):
            raise ValueError(
                f"profile of target {profile.target_index}: {n} angles, "
                f"{len(profile.energies_kcal_mol)} energies, {len(profile.geometries_angstrom)} geometries"
            )


def write_force_field(path: Path, force_field: ForceField, parameter_ids: list[str]) -> None:
    """Write `force_field` with every k of the ProperTorsions `parameter_ids` marked for fitting."""
    force_field = copy.deepcopy(force_field)
    # Marks left by an earlier fit (a fitted force field keeps them) would make ForceBalance fit those too.
    for name in force_field.registered_parameter_handlers:
        for parameter in force_field.get_parameter_handler(name).parameters:
            if "parameterize" in parameter._cosmetic_attribs:
                parameter.delete_cosmetic_attribute("parameterize")
    handler = force_field.get_parameter_handler("ProperTorsions")
    by_id = {parameter.id: parameter for parameter in handler.parameters}
    for pid in parameter_ids:
        parameter = by_id[pid]
        names = [f"k{i + 1}" for i in range(len(parameter.k))]
        parameter.add_cosmetic_attribute("parameterize", ", ".join(names))
    path.parent.mkdir(parents=True, exist_ok=True)
    force_field.to_file(str(path), discard_cosmetic_attributes=False)


def write_target(directory: Path, profile: TorsionProfile, settings: ForceBalanceSettings) -> None:
    """Write the files of one TorsionProfile_SMIRNOFF target."""
    molecule = profile.molecule()
    directory.mkdir(parents=True, exist_ok=True)
    first = Molecule(molecule)
    first.clear_conformers()
    first.add_conformer(molecule.conformers[0])
    first.to_file(str(directory / "input.sdf"), file_format="SDF")
    symbols = [atom.symbol for atom in molecule.atoms]
    bonds = [(bond.atom1_index, bond.atom2_index) for bond in molecule.bonds]
    (directory / "conf.pdb").write_text(_pdb(symbols, bonds, profile.geometries_angstrom[0]))
    (directory / "scan.xyz").write_text(_xyz(symbols, profile))
    (directory / "qdata.txt").write_text(_qdata(profile))
    spacing = _grid_spacing(profile.angles)
    metadata = {
        "dihedrals": [list(profile.dihedral)],
        "grid_spacing": [spacing] if spacing else None,
        "dihedral_ranges": None,
        "energy_decrease_thresh": None,
        "energy_upper_limit": settings.target.energy_cutoff,
        "torsion_grid_ids": [[angle] for angle in profile.angles],
    }
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=1))


def optimize_in(settings: ForceBalanceSettings, target_names: list[str]) -> str:
    """The text of optimize.in."""
    options = {
        "jobtype": settings.job_type,
        "forcefield": FORCE_FIELD_NAME,
        "ffdir": "forcefield",
        "penalty_type": settings.penalty_type,
        "maxstep": settings.max_iterations,
        "convergence_step": settings.step_convergence_threshold,
        "convergence_objective": settings.objective_convergence_threshold,
        "convergence_gradient": settings.gradient_convergence_threshold,
        "criteria": settings.n_criteria,
        "eig_lowerbound": settings.eigenvalue_lower_bound,
        "finite_difference_h": settings.finite_difference_h,
        "penalty_additive": settings.penalty_additive,
        "trust0": settings.initial_trust_radius,
        "mintrust": settings.minimum_trust_radius,
        "error_tolerance": settings.error_tolerance,
        "adaptive_factor": settings.adaptive_factor,
        "adaptive_damping": settings.adaptive_damping,
        "normalize_weights": settings.normalize_weights,
        "constrain_charge": False,
        "backup": False,
    }
    lines = ["# ForceBalance torsion fit written by bespoke_fractal", "$options"]
    lines += [f"{key} {_value(value)}" for key, value in options.items()]
    lines += ["priors", f"   {TORSION_PRIOR_KEY} : {settings.torsion_prior!r}", "/priors", "$end", ""]
    target = settings.target
    relaxed = target.protocol == "relaxed"
    for name in target_names:
        lines += [
            "$target",
            f"name {name}",
            f"type {RELAXED_TARGET_TYPE if relaxed else 'TorsionProfile_SMIRNOFF'}",
            f"weight {target.weight!r}",
            "mol2 input.sdf",
            "pdb conf.pdb",
            "coords scan.xyz",
            # 0: no per-evaluation plot_torsion.pdf/EnergyCompare.txt/mm_minimized.xyz; writing
            # them took half of a small fit's time, and the stage draws its own plots
            "writelevel 0",
            f"attenuate {_value(target.attenuate_weights)}",
            f"energy_denom {target.energy_denominator!r}",
            f"energy_upper {target.energy_cutoff!r}",
            f"restrain_k {0.0 if relaxed else target.restrain_k!r}",
            "openmm_platform Reference",
            "$end",
            "",
        ]
    return "\n".join(lines)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _grid_spacing(angles: list[int]) -> int | None:
    steps = {b - a for a, b in zip(angles, angles[1:], strict=False)}
    return steps.pop() if len(steps) == 1 else None


def _xyz(symbols: list[str], profile: TorsionProfile) -> str:
    frames = []
    for angle, geometry in zip(profile.angles, profile.geometries_angstrom, strict=True):
        frames.append(f"{len(symbols)}\ngrid point {angle}")
        frames += [
            f"{symbol:<2s} {x:16.10f} {y:16.10f} {z:16.10f}"
            for symbol, (x, y, z) in zip(symbols, geometry, strict=True)
        ]
    return "\n".join(frames) + "\n"


def _qdata(profile: TorsionProfile) -> str:
    blocks = []
    for index, (energy, geometry) in enumerate(
        zip(profile.energies_kcal_mol, profile.geometries_angstrom, strict=True)
    ):
        coords = " ".join(f"{c:.10f}" for xyz in geometry for c in xyz)
        blocks.append(f"JOB {index}\nCOORDS {coords}\nENERGY {energy / KCAL_MOL_PER_HARTREE:.14f}\n")
    return "\n".join(blocks)


def _pdb(symbols: list[str], bonds: list[tuple[int, int]], geometry: list[list[float]]) -> str:
    """A single-residue HETATM PDB with CONECT records, so OpenMM builds the bonded topology."""
    counts: Counter[str] = Counter()
    lines = []
    for index, (symbol, (x, y, z)) in enumerate(zip(symbols, geometry, strict=True)):
        counts[symbol] += 1
        name = f"{symbol}{counts[symbol]}"
        if len(name) > 4:
            name = f"{symbol}{index + 1}"[-4:]
        # single-letter elements start in column 14, as in PDB files from the PDB
        field = f" {name:<3s}" if len(symbol) == 1 and len(name) < 4 else f"{name:<4s}"
        lines.append(
            f"HETATM{index + 1:5d} {field} UNK A   1    "
            f"{x:8.3f}{y:8.3f}{z:8.3f}{1.0:6.2f}{0.0:6.2f}          {symbol.upper():>2s}"
        )
    neighbours: dict[int, list[int]] = {i: [] for i in range(len(symbols))}
    for a, b in bonds:
        neighbours[a].append(b)
        neighbours[b].append(a)
    for atom, partners in neighbours.items():
        for start in range(0, len(partners), 4):
            chunk = sorted(partners)[start : start + 4]
            lines.append(f"CONECT{atom + 1:5d}" + "".join(f"{p + 1:5d}" for p in chunk))
    lines.append("END")
    return "\n".join(lines) + "\n"
