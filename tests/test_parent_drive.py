"""drive_parent: each target bond is also driven on the whole parent, deduplicated like every
drive, read back in the parent's own atom order and counted in the plan."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import invoke
from openff.toolkit import Molecule

from bespoke_fractal.executor import JobStore
from bespoke_fractal.executor.coordinator import Coordinator
from bespoke_fractal.executor.drives import dihedral_degrees, job_results, parent_profiles, submit_targets
from bespoke_fractal.executor.executor import submit_to_store
from bespoke_fractal.executor.plan import plan_schemas
from bespoke_fractal.executor.workers import DRIVE_LIST
from bespoke_fractal.optimization.stage import usable_profiles
from bespoke_fractal.qc.plan import CostModel
from bespoke_fractal.schema.identity import canonicalize_torsion, default_dihedral, equivalent_bond_key
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow import BespokeWorkflowFactory
from bespoke_fractal.workflow.batch import SchemaOutcome

# hexane's C1-C2 bond (and its image C4-C3): the Pfizer fragment is pentane (17 atoms), the
# parent has 20; the parent drive is C0-C1-C2-C3 of hexane
HEXANE = "CCCCCC"
C1_C2 = "[CH3][CH2:1][CH2:2]"


@pytest.fixture(scope="module")
def factory() -> BespokeWorkflowFactory:
    return BespokeWorkflowFactory.from_preset(
        "debug",
        **{
            "qc_spec.grid_spacing": 90,
            "fragmentation_engine": "Pfizer",
            "target_torsion_smirks": [C1_C2],
            "drive_parent": True,
        },
    )


@pytest.fixture(scope="module")
def schema(factory) -> BespokeOptimizationSchema:
    return factory.optimization_schema_from_molecule(HEXANE)


@pytest.fixture(scope="module")
def shuffled(factory) -> BespokeOptimizationSchema:
    """The same job from hexane in another atom order: same drives, other atom order."""
    molecule = Molecule.from_smiles(HEXANE)
    order = np.random.default_rng(7).permutation(molecule.n_atoms)
    return factory.optimization_schema_from_molecule(
        molecule.remap({int(old): new for new, old in enumerate(order)}, current_to_new=True)
    )


@pytest.fixture(scope="module")
def computed(stage, schema):
    """The job's drives, submitted and complete."""
    drives = submit_targets(stage, [schema])
    results = stage.wait(drives, timeout=600, progress=False)
    assert all(r.ok for r in results), [r.error for r in results]
    return drives


def test_field_keeps_old_ids_and_json(factory, schema):
    plain = factory.with_changes({"drive_parent": False})
    hexane = Molecule.from_smiles(HEXANE)
    assert plain.job_id(hexane) != factory.job_id(hexane)
    # without the field set, the id and the job description are what they were before it existed
    legacy = json.dumps(
        [hexane.to_smiles(isomeric=True), plain.model_dump(mode="json", exclude={"drive_parent"})],
        sort_keys=True,
    )
    assert plain.job_id(hexane) == "bf-" + hashlib.sha256(legacy.encode()).hexdigest()[:12]
    plain_schema = schema.model_copy(update={"drive_parent": False})
    assert "drive_parent" not in json.loads(plain_schema.model_dump_json())
    assert json.loads(schema.model_dump_json())["drive_parent"] is True
    assert BespokeOptimizationSchema.model_validate_json(schema.model_dump_json()).drive_parent


def test_parent_drives(schema):
    (target,) = schema.targets
    assert sorted(target.parent_bonds) == [(1, 2), (3, 4)]
    fragment = schema.fragmentation.fragments[target.fragment].to_molecule()
    parent = schema.parent_molecule()
    assert fragment.n_atoms == 17 and parent.n_atoms == 20
    [(index, dihedral, identity)] = schema.parent_drives()
    assert index == 0 and dihedral == target.parent_dihedral
    assert identity == canonicalize_torsion(parent, dihedral).identity
    assert identity.key != target.identity.key
    # a dihedral ending on a capping atom: the default dihedral of the parent's bond instead
    capped = schema.fragmentation.model_copy(
        update={"targets": [target.model_copy(update={"parent_dihedral": None})]}
    )
    [(_, fallback, _identity)] = schema.model_copy(update={"fragmentation": capped}).parent_drives()
    assert fallback == default_dihedral(parent, target.parent_bond)
    # a target driven on the whole parent needs no second drive
    whole = BespokeWorkflowFactory.from_preset(
        "debug", fragmentation_engine="none", target_torsion_smirks=[C1_C2], drive_parent=True
    ).optimization_schema_from_molecule(HEXANE)
    assert whole.parent_drives() == []


def test_parent_drive_is_submitted_once(stage, schema, computed, admin_client, record_count):
    dataset = schema.qc_spec.dataset_name
    [(_, _, identity)] = schema.parent_drives()
    keys = {(d.dataset_name, d.entry_name) for d in computed}
    assert keys == {(dataset, schema.targets[0].identity.key), (dataset, identity.key)}
    before = record_count(admin_client)
    again = submit_targets(stage, [schema])
    assert record_count(admin_client) == before, "a second submission made new records"
    assert {d.record_id for d in again} == {d.record_id for d in computed}
    assert not any(d.new_entry for d in again)
    # without drive_parent only the fragment is driven
    [fragment_only] = submit_targets(stage, [schema.model_copy(update={"drive_parent": False})])
    assert fragment_only.entry_name == schema.targets[0].identity.key


@pytest.mark.parametrize("job", ["schema", "shuffled"])
def test_parent_profile_in_the_parents_atom_order(request, stage, computed, job):
    """Read through the drives as recorded for `schema`, in `job`'s own atom order (a drive is
    recorded once per submission, in the order of the first job that needed it)."""
    job = request.getfixturevalue(job)
    fragment_results, parent_results = job_results(stage, job, computed)
    [profile] = parent_profiles(job, parent_results)
    parent = job.parent_molecule()
    assert profile.target_index == 0 and profile.mapped_smiles == job.smiles
    assert profile.angles == [-90, 0, 90, 180] and min(profile.energies_kcal_mol) == 0.0
    [(_, dihedral, _)] = job.parent_drives()
    # the bond asked for, or its symmetry image (the drive's canonical dihedral)
    assert equivalent_bond_key(parent, profile.dihedral[1:3]) == equivalent_bond_key(parent, dihedral[1:3])
    for angle, geometry in zip(profile.angles, profile.geometries_angstrom, strict=True):
        geometry = np.asarray(geometry)
        assert geometry.shape == (parent.n_atoms, 3)
        error = (dihedral_degrees(geometry, profile.dihedral) - angle + 180) % 360 - 180
        assert abs(error) < 1.0
        for bond in parent.bonds:
            assert np.linalg.norm(geometry[bond.atom1_index] - geometry[bond.atom2_index]) < 1.7
    # the fragment profile is in the job's own fragment order too
    [fragment_profile], unfitted = usable_profiles(job, fragment_results)
    assert not unfitted
    for angle, geometry in zip(fragment_profile.angles, fragment_profile.geometries_angstrom, strict=True):
        error = (dihedral_degrees(np.asarray(geometry), fragment_profile.dihedral) - angle + 180) % 360 - 180
        assert abs(error) < 1.0
    # a job without drive_parent has no parent profile
    plain = job.model_copy(update={"drive_parent": False})
    assert parent_profiles(plain, parent_results) == []


def test_plan_counts_the_parent_drive(schema, factory, computed, admin_client, embedded_server):
    outcome = SchemaOutcome(name=HEXANE, schema_=schema)
    [(_, _, identity)] = schema.parent_drives()
    offline = plan_schemas([outcome], None, factory)
    counts = offline.molecules[0].drives
    assert counts.targets == 1 and counts.unique == 2 and counts.parent == 1 and counts.to_compute == 2
    assert offline.molecules[0].parent_drive_keys == [identity.key]
    # the parent drive costs the fragment drive times parent atoms / fragment atoms
    per_drive = CostModel.recorded(factory.qc_spec).drive_core_hours(factory.qc_spec)
    assert offline.estimated_core_hours == pytest.approx(per_drive * (1 + 20 / 17))
    assert "(1 of whole parents)" in offline.summary()
    without = plan_schemas(
        [SchemaOutcome(name=HEXANE, schema_=schema.model_copy(update={"drive_parent": False}))], None, factory
    )
    assert without.total.unique == 1 and without.total.parent == 0
    assert without.estimated_core_hours == pytest.approx(per_drive)

    checked = plan_schemas([outcome], admin_client, factory)
    assert checked.total.complete == 2 and checked.total.to_compute == 0 and checked.total.parent == 1
    assert checked.estimated_core_hours == 0

    # the CLI flag sets the same field, and the plan shows the drive
    result = invoke(
        "executor",
        "plan",
        "--directory",
        str(embedded_server.directory),
        "--smiles",
        HEXANE,
        "--workflow",
        "debug",
        "--set",
        "qc_spec.grid_spacing=90",
        "--set",
        "fragmentation_engine=Pfizer",
        "--target-torsion",
        C1_C2,
        "--drive-parent",
        "--json",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["molecules"][0]["parent_drive_keys"] == [identity.key]
    assert plan["total"]["complete"] == 2 and plan["total"]["parent"] == 1


class _NoParentStage:
    """A stage that cannot submit a drive of the 20-atom parent (as when ETKDG fails on it)."""

    def __init__(self, stage) -> None:
        self.stage = stage

    def submit_many(self, torsions, spec):
        if any(molecule.n_atoms == 20 for molecule, _dihedral in torsions):
            raise ValueError("ETKDG could not embed any conformer")
        return self.stage.submit_many(torsions, spec)


class _Monitor:
    """Statuses as given: the parent drive failed for good, the fragment drive is complete."""

    def __init__(self, statuses: dict[int, str]) -> None:
        self.statuses = statuses
        self.errors = {i: "TestError: no" for i, s in statuses.items() if s == "error"}

    def poll(self, record_ids):
        return {i: self.statuses[i] for i in record_ids}


def test_coordinator_waits_for_the_parent_drive_and_a_failed_one_is_a_note(
    tmp_path, schema, computed, stage, embedded_server
):
    store = JobStore.in_directory(tmp_path)
    coordinator = Coordinator(tmp_path, store, embedded_server.connection("submit"))
    job = submit_to_store(store, schema)
    coordinator.qc.submit()
    output = store.output(job)
    assert "2 drive(s) (1 of the whole parent), 2 already on the server" in output.stages[1].note
    assert sorted(output.qc.record_ids) == sorted(d.record_id for d in computed)
    coordinator.qc.poll()
    output = store.output(job)
    assert output.stages[1].status == "success" and output.stages[2].status == "waiting"

    # a parent drive that failed: the job goes on to the fit with a note
    (tmp_path / "failed").mkdir()
    failed_store = JobStore.in_directory(tmp_path / "failed")
    coordinator = Coordinator(tmp_path / "failed", failed_store, embedded_server.connection("submit"))
    job = submit_to_store(failed_store, schema)
    coordinator.qc.submit()
    with failed_store.session() as session:
        drives = DRIVE_LIST.validate_json(failed_store.job(session, job).drives)
    parent_key = schema.parent_drives()[0][2].key
    coordinator.qc.monitor = _Monitor(
        {d.record_id: "error" if d.entry_name == parent_key else "complete" for d in drives}
    )
    coordinator.qc.poll()
    output = failed_store.output(job)
    assert output.stages[1].status == "success", output.stages[1].error
    assert "1 drive(s) of the whole parent failed" in output.stages[1].note

    # a parent drive that cannot be submitted is left out; the fragment drive goes on
    [fragment_drive] = submit_targets(_NoParentStage(stage), [schema])
    assert fragment_drive.entry_name == schema.targets[0].identity.key
    job = submit_to_store(failed_store, schema)
    coordinator.qc.record_drives(int(job), schema, [fragment_drive])
    note = failed_store.output(job).stages[1].note
    assert "1 drive(s) (0 of the whole parent, 1 could not be submitted)" in note
