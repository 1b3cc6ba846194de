"""Bespoke torsion SMIRKS: one parameter per symmetry class of torsions around each target bond,
specific to the parent and matching the fragment, checked with the toolkit's own labelling."""

from __future__ import annotations

import pytest
from openff.toolkit import ForceField
from openff.units import unit

from bespoke_fractal.forcefield import load_force_field
from bespoke_fractal.fragmentation import AM1BondOrderCache
from bespoke_fractal.optimization.smirks import add_bespoke_torsions, bespoke_torsions
from bespoke_fractal.schema.fits import BespokeTorsion
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow import BespokeWorkflowFactory

IBUPROFEN = "CC(C)Cc1ccc(cc1)[C@H](C)C(=O)O"
PFIZER = BespokeWorkflowFactory.from_preset("debug").with_changes({"fragmentation_engine": "Pfizer"})

# The fast tier (pytest -m fast) has every test here but ibuprofen's WBO fragments, which need
# AM1 bond orders of ibuprofen (one to two minutes).


@pytest.fixture(scope="module")
def sage() -> ForceField:
    return load_force_field("openff_unconstrained-2.2.1.offxml")


@pytest.fixture(scope="module")
def schema_of(am1_cache_directory):
    """Job description of a SMILES (Pfizer fragments unless WBO is asked for), built once."""
    built: dict[tuple[str, str], BespokeOptimizationSchema] = {}

    def build(smiles: str, engine: str = "Pfizer") -> BespokeOptimizationSchema:
        if (smiles, engine) not in built:
            factory = PFIZER.with_changes({"fragmentation_engine": engine})
            built[smiles, engine] = factory.optimization_schema_from_molecule(
                smiles, AM1BondOrderCache(am1_cache_directory)
            )
        return built[smiles, engine]

    return build


def _canonical(quartet) -> tuple[int, ...]:
    quartet = tuple(quartet)
    return min(quartet, quartet[::-1])


def _check_labels(schema: BespokeOptimizationSchema, force_field: ForceField, torsions: list[BespokeTorsion]):
    """Parent: every torsion around a target bond has its own bespoke parameter, no other torsion
    has one. Fragments: every torsion around the driven bond has its target's bespoke parameter."""
    by_id = {t.id: t for t in torsions}
    target_of_bond = {frozenset(b): i for i, t in enumerate(schema.targets) for b in t.parent_bonds}
    parent = schema.parent_molecule()
    labels = force_field.label_molecules(parent.to_topology())[0]["ProperTorsions"]
    for quartet, parameter in labels.items():
        target = target_of_bond.get(frozenset(quartet[1:3]))
        if target is None:
            assert parameter.id not in by_id, (quartet, parameter.id)
            continue
        torsion = by_id.get(parameter.id)
        assert torsion is not None, f"parent torsion {quartet} got {parameter.id}"
        assert target in torsion.target_indices
        assert _canonical(quartet) in [tuple(q) for q in torsion.parent_torsions]
    for index, target in enumerate(schema.targets):
        fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
        labels = force_field.label_molecules(fragment.to_topology())[0]["ProperTorsions"]
        around = {q: p for q, p in labels.items() if set(q[1:3]) == set(target.fragment_dihedral[1:3])}
        assert around
        for quartet, parameter in around.items():
            torsion = by_id.get(parameter.id)
            assert torsion is not None, f"target {index}: fragment torsion {quartet} got {parameter.id}"
            assert _canonical(quartet) in [tuple(q) for q in torsion.fragment_torsions[index]]


def _check_smirks_match(schema: BespokeOptimizationSchema, torsions: list[BespokeTorsion]) -> None:
    """With the toolkit's matching: each SMIRKS matches exactly its parent torsions, and its
    torsions in each fragment."""
    parent = schema.parent_molecule()
    for torsion in torsions:
        found = {_canonical(m) for m in parent.chemical_environment_matches(torsion.smirks)}
        assert found == {tuple(q) for q in torsion.parent_torsions}, torsion.id
        for index, quartets in torsion.fragment_torsions.items():
            target = schema.targets[index]
            fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
            found = {_canonical(m) for m in fragment.chemical_environment_matches(torsion.smirks)}
            assert {tuple(q) for q in quartets} <= found, torsion.id


@pytest.mark.fast
def test_butane(schema_of, sage) -> None:
    schema = schema_of("CCCC", "WBO")
    torsions = bespoke_torsions(schema, sage)
    assert [t.id for t in torsions] == ["bf-t0-C1-C2-q0", "bf-t0-C1-C2-q1", "bf-t0-C1-C2-q2"]
    assert sorted(len(t.parent_torsions) for t in torsions) == [1, 4, 4]  # CCCC, CCCH (x4), HCCH (x4)
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


@pytest.mark.fast
def test_biphenyl_one_parameter_for_the_four_ring_torsions(schema_of, sage) -> None:
    schema = schema_of("c1ccccc1-c1ccccc1")
    (torsion,) = bespoke_torsions(schema, sage)
    assert len(torsion.parent_torsions) == 4
    assert torsion.id == "bf-t0-C5-C6-q0"
    _check_labels(schema, add_bespoke_torsions(sage, [torsion]), [torsion])


@pytest.mark.fast
def test_diethylbenzene_symmetric_bonds_share_parameters(schema_of, sage) -> None:
    schema = schema_of("CCc1ccc(CC)cc1")
    (target,) = schema.targets
    assert len(target.parent_bonds) == 2
    torsions = bespoke_torsions(schema, sage)
    assert len(torsions) == 2  # C-C-c:c and H-C-c:c
    for torsion in torsions:
        bonds = {frozenset(q[1:3]) for q in torsion.parent_torsions}
        assert bonds == {frozenset(b) for b in target.parent_bonds}
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


@pytest.mark.parametrize("engine", [pytest.param("Pfizer", marks=pytest.mark.fast), "WBO"])
def test_ibuprofen_smirks_match_parent_and_the_smaller_fragments(schema_of, sage, engine) -> None:
    schema = schema_of(IBUPROFEN, engine)
    parent = schema.parent_molecule()
    fragments = schema.fragmentation.fragments
    assert all(len(f.parent_atoms) < parent.n_atoms for f in fragments)
    assert any(len(f.parent_atoms) < f.to_molecule().n_atoms for f in fragments)  # capped
    torsions = bespoke_torsions(schema, sage)
    assert {t.target_index for t in torsions} == set(range(len(schema.targets)))
    assert len({t.smirks for t in torsions}) == len(torsions)
    for torsion in torsions:
        b, c = schema.targets[torsion.target_index].parent_bond
        assert torsion.id.startswith(
            f"bf-t{torsion.target_index}-{parent.atoms[b].symbol}{b}-{parent.atoms[c].symbol}{c}-q"
        )
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


@pytest.mark.fast
def test_carboxylate(schema_of, sage) -> None:
    schema = schema_of("CCCC(=O)[O-]")
    torsions = bespoke_torsions(schema, sage)
    assert {t.target_index for t in torsions} == {0, 1}
    assert any("-1" in t.smirks for t in torsions)  # the charged oxygen is in the environment
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


@pytest.mark.fast
def test_fragment_symmetry_merges_parent_classes(schema_of, sage) -> None:
    """3-methyl is cut from the fragment, so its two ortho carbons become equivalent there and
    the QC data cannot tell their torsions apart: they share a parameter."""
    schema = schema_of("CCc1cccc(C)c1")
    torsions = bespoke_torsions(schema, sage)
    parent = schema.parent_molecule()
    assert sorted(len(t.parent_torsions) for t in torsions) == [2, 4]  # C-C-c:c and H-C-c:c
    for torsion in torsions:
        ortho = {i for q in torsion.parent_torsions for i in (q[0], q[3]) if parent.atoms[i].is_aromatic}
        assert len(ortho) == 2
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


@pytest.mark.fast
def test_targets_with_the_same_drive_share_parameters(schema_of, sage) -> None:
    """In decane the middle bonds' fragments are all hexane around its central bond: one drive,
    one set of parameters for all of them, and none of them on the terminal C1-C2 bond."""
    schema = schema_of("CCCCCCCCCC")
    torsions = bespoke_torsions(schema, sage)
    shared = [t for t in torsions if len(t.target_indices) > 1]
    assert shared and all(t.id.count("-t") == len(t.target_indices) for t in shared)
    _check_smirks_match(schema, torsions)
    _check_labels(schema, add_bespoke_torsions(sage, torsions), torsions)


def _initial(sage: ForceField, schema: BespokeOptimizationSchema, quartet) -> object:
    labels = sage.label_molecules(schema.parent_molecule().to_topology())[0]["ProperTorsions"]
    return labels.get(tuple(quartet)) or labels[tuple(quartet)[::-1]]


@pytest.mark.fast
def test_expanded_terms_take_k_from_the_initial_parameter(schema_of, sage) -> None:
    schema = schema_of("CCCC", "WBO")
    for torsion in bespoke_torsions(schema, sage):
        assert torsion.periodicity == [1, 2, 3, 4]
        assert torsion.phase == [0.0, 180.0, 0.0, 180.0]
        assert torsion.idivf == [1.0] * 4
        initial = _initial(sage, schema, torsion.parent_torsions[0])
        assert torsion.initial_id == initial.id
        expected = [0.0] * 4
        for n, phase, k, idivf in zip(
            initial.periodicity, initial.phase, initial.k, initial.idivf, strict=True
        ):
            sign = 1.0 if round(phase.m_as(unit.degree)) % 360 == (0 if n % 2 else 180) else -1.0
            expected[n - 1] += sign * k.m_as(unit.kilocalorie_per_mole) / idivf
        assert torsion.k == pytest.approx(expected)


@pytest.mark.fast
def test_unexpanded_terms_copy_the_initial_parameter(schema_of, sage) -> None:
    schema = schema_of("CCCC", "WBO")
    settings = schema.smirks_settings.model_copy(update={"expand_torsion_terms": False})
    for torsion in bespoke_torsions(schema.model_copy(update={"smirks_settings": settings}), sage):
        initial = _initial(sage, schema, torsion.parent_torsions[0])
        assert torsion.periodicity == list(initial.periodicity)
        assert torsion.phase == pytest.approx([p.m_as(unit.degree) for p in initial.phase])
        assert torsion.k == pytest.approx([k.m_as(unit.kilocalorie_per_mole) for k in initial.k])


@pytest.mark.fast
def test_without_bespoke_terms_the_initial_parameters_are_refitted(schema_of, sage) -> None:
    schema = schema_of(IBUPROFEN)
    settings = schema.smirks_settings.model_copy(update={"generate_bespoke_terms": False})
    torsions = bespoke_torsions(schema.model_copy(update={"smirks_settings": settings}), sage)
    handler = sage.get_parameter_handler("ProperTorsions")
    originals = {p.id: p.smirks for p in handler.parameters}
    assert torsions and all(originals[t.id] == t.smirks for t in torsions)
    refit = add_bespoke_torsions(sage, torsions)
    new_handler = refit.get_parameter_handler("ProperTorsions")
    assert [p.id for p in new_handler.parameters] == [p.id for p in handler.parameters]  # in place
    for torsion in torsions:
        assert list(new_handler.parameters[torsion.smirks].periodicity) == [1, 2, 3, 4]


@pytest.mark.fast
def test_add_bespoke_torsions_appends_to_a_copy(schema_of, sage) -> None:
    schema = schema_of("CCCC", "WBO")
    torsions = bespoke_torsions(schema, sage)
    before = len(sage.get_parameter_handler("ProperTorsions").parameters)
    force_field = add_bespoke_torsions(sage, torsions)
    parameters = force_field.get_parameter_handler("ProperTorsions").parameters
    assert len(sage.get_parameter_handler("ProperTorsions").parameters) == before
    assert [p.id for p in parameters[-len(torsions) :]] == [t.id for t in torsions]
    written = ForceField(force_field.to_string())  # the SMIRKS survive a round trip through XML
    assert written.get_parameter_handler("ProperTorsions").parameters[-1].smirks == torsions[-1].smirks
