"""The workflow model: presets, changes, YAML/JSON round trips and invalid workflows."""

from __future__ import annotations

import json

import pytest
import yaml

from bespoke_fractal.errors import WorkflowError
from bespoke_fractal.fragmentation import DEFAULT_TARGET_SMARTS, NoFragmentation, PfizerFragmentation
from bespoke_fractal.workflow import BespokeWorkflowFactory, list_workflow_presets

pytestmark = pytest.mark.fast  # the fast tier: pytest -m fast


@pytest.mark.parametrize(
    "name, program, method, basis",
    [
        ("default", "psi4", "b3lyp-d3bj", "dzvp"),
        ("xtb", "xtb", "gfn2-xtb", None),
        ("debug", "rdkit", "mmff94", None),
    ],
)
def test_presets_load(name, program, method, basis) -> None:
    factory = BespokeWorkflowFactory.from_preset(name)
    spec = factory.qc_spec
    assert (spec.program, spec.method, spec.basis) == (program, method, basis)
    assert factory.qc_spec.grid_spacing == 15
    assert factory.initial_force_field == "openff_unconstrained-2.2.1.offxml"
    assert factory.target_torsion_smirks == [DEFAULT_TARGET_SMARTS]
    assert factory.fragmentation_engine.type == "WBO"
    assert factory.fragmentation_engine.threshold == 0.03
    assert name in list_workflow_presets()


def test_default_factory_is_the_default_preset() -> None:
    assert BespokeWorkflowFactory() == BespokeWorkflowFactory.from_preset("default")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_round_trip_through_files(tmp_path, suffix) -> None:
    factory = BespokeWorkflowFactory.from_preset(
        "xtb",
        **{
            "qc_spec.grid_spacing": 30,
            "fragmentation_engine.threshold": 0.05,
            "optimizer.max_iterations": 4,
            "target_torsion_smirks": ["[#6:1]-[#6:2]", "[#6:1]-[#8:2]"],
        },
    )
    path = factory.to_file(tmp_path / f"workflow{suffix}")
    loaded = BespokeWorkflowFactory.from_file(path)
    assert loaded == factory
    assert loaded.qc_spec.grid_spacing == 30 and loaded.qc_spec.program == "xtb"
    assert loaded.qc_spec.dataset_name == factory.qc_spec.dataset_name
    assert loaded.fragmentation_engine.threshold == 0.05
    assert loaded.optimizer.max_iterations == 4
    text = path.read_text()
    data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert data["qc_spec"]["grid_spacing"] == 30


def test_hand_written_file_with_preset_shorthand(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "qc_spec: {preset: debug, grid_spacing: 30}\n"
        "fragmentation_engine: Pfizer\n"
        "initial_force_field: openff_unconstrained-2.1.0.offxml\n"
    )
    factory = BespokeWorkflowFactory.from_file(path)
    assert factory.qc_spec.method == "mmff94" and factory.qc_spec.grid_spacing == 30
    assert factory.fragmentation_engine == PfizerFragmentation()
    assert factory.initial_force_field == "openff_unconstrained-2.1.0.offxml"


def test_no_fragmentation_can_be_asked_for() -> None:
    assert BespokeWorkflowFactory(fragmentation_engine=None).fragmentation_engine == NoFragmentation()
    assert BespokeWorkflowFactory(fragmentation_engine="none").fragmentation_engine == NoFragmentation()


def test_force_field_path(tmp_path) -> None:
    from openff.toolkit import ForceField

    path = tmp_path / "base.offxml"
    ForceField("openff_unconstrained-2.2.1.offxml").to_file(str(path))
    assert BespokeWorkflowFactory(initial_force_field=str(path)).initial_force_field == str(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("nonsense_field: 3\n", "nonsense_field: Extra inputs are not permitted"),
        ("qc_spec: {preset: debug, grid_spacing: many}\n", "grid_spacing"),
        ("qc_spec: {preset: debug, grid_spacing: 120}\n", "must divide 180"),
        ("qc_spec: no-such-preset\n", "unknown QC preset 'no-such-preset'"),
        ("optimizer: {max_iterations: -1}\n", "optimizer.max_iterations"),
        ("fragmentation_engine: {type: magic}\n", "fragmentation_engine"),
        ("initial_force_field: openff-2.2.1.offxml\n", "constrains bonds to hydrogen"),
        ("initial_force_field: no-such.offxml\n", "cannot load force field 'no-such.offxml'"),
        ("target_torsion_smirks: ['[C:1]-[C']\n", "does not parse"),
        ("target_torsion_smirks: ['[C:1]-[C]']\n", "exactly the two bond atoms"),
        ("target_torsion_smirks: ['[C:1].[C:2]']\n", "must be bonded"),
        ("qc_spec: [\n", "not valid yaml"),
        ("- just a list\n", "mapping of fields"),
    ],
)
def test_bad_workflow_files_give_one_line(tmp_path, content, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(WorkflowError) as error:
        BespokeWorkflowFactory.from_file(path)
    text = str(error.value)
    assert "\n" not in text
    assert message.lower() in text.lower()
    assert str(path) in text


def test_missing_file_and_unknown_preset() -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow file"):
        BespokeWorkflowFactory.from_file("/nonexistent/workflow.yaml")
    with pytest.raises(WorkflowError, match="unknown workflow preset 'fast'"):
        BespokeWorkflowFactory.from_preset("fast")
    with pytest.raises(WorkflowError, match="not a group of settings"):
        BespokeWorkflowFactory.from_preset("debug", **{"initial_force_field.x": 1})
