"""openff-bespokefit workflow files read as this project's workflow: the field mapping, refusals,
the CLI, and the mapping table of docs/bespokefit.md."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import WIDE, invoke, one_error_line, run_cli

from bespoke_fractal.errors import WorkflowError
from bespoke_fractal.fragmentation import DEFAULT_TARGET_SMARTS
from bespoke_fractal.workflow import BespokeWorkflowFactory
from bespoke_fractal.workflow.bespokefit import FIELDS, factory_from_bespokefit, is_bespokefit_workflow

pytestmark = pytest.mark.fast

DATA = Path(__file__).parent / "data"
WORKFLOW = DATA / "bespokefit-workflow.json"
DEFAULT_WORKFLOW = DATA / "bespokefit-workflow.yaml"
UNSUPPORTED = DATA / "bespokefit-workflow-unsupported.json"
DOC = Path(__file__).parents[1] / "docs" / "bespokefit.md"


@pytest.fixture
def document() -> dict:
    return json.loads(WORKFLOW.read_text())


def test_every_mapped_field_lands() -> None:
    factory = BespokeWorkflowFactory.from_file(WORKFLOW)

    assert factory.initial_force_field == "openff_unconstrained-2.2.0.offxml"
    assert factory.target_torsion_smirks == [DEFAULT_TARGET_SMARTS]
    assert factory.smirks_settings.expand_torsion_terms is False
    assert factory.smirks_settings.generate_bespoke_terms is True

    engine = factory.fragmentation_engine
    assert engine.type == "WBO"
    assert (engine.threshold, engine.heuristic, engine.keep_non_rotor_ring_substituents) == (
        0.05,
        "wbo",
        True,
    )
    assert (engine.max_conformers, engine.rms_threshold) == (500, 0.5)

    spec = factory.qc_spec  # rdkit mmff94 is the debug preset; the grid comes from the template
    assert spec.name == "rdkit-mmff94"
    assert (spec.program, spec.method, spec.basis, spec.keywords) == ("rdkit", "mmff94", None, {})
    assert (spec.grid_spacing, spec.n_conformers) == (30, 2)

    optimizer = factory.optimizer
    assert optimizer.model_dump(exclude={"discard_unconverged", "torsion_prior", "target"}) == {
        "type": "ForceBalance",
        "max_iterations": 5,
        "penalty_type": "L1",
        "job_type": "optimize",
        "step_convergence_threshold": 0.02,
        "objective_convergence_threshold": 0.03,
        "gradient_convergence_threshold": 0.04,
        "n_criteria": 1,
        "eigenvalue_lower_bound": 0.02,
        "finite_difference_h": 0.005,
        "penalty_additive": 0.5,
        "initial_trust_radius": -0.5,
        "minimum_trust_radius": 0.04,
        "error_tolerance": 0.9,
        "adaptive_factor": 0.3,
        "adaptive_damping": 0.8,
        "normalize_weights": True,
    }
    assert optimizer.torsion_prior == 4.0
    target = optimizer.target
    assert (target.weight, target.attenuate_weights) == (2.0, False)
    assert (target.energy_denominator, target.energy_cutoff) == (2.5, 8.0)
    # what BespokeFit has no field for keeps this project's default
    assert (target.protocol, optimizer.discard_unconverged, factory.drive_parent) == ("relaxed", False, False)


def test_bespokefit_default_is_the_default_preset() -> None:
    """BespokeFit's own default workflow (psi4 B3LYP-D3BJ/DZVP, grid 15, 10 conformers) is the
    `default` preset; only its force field version and L1 penalty differ."""
    factory = BespokeWorkflowFactory.from_file(DEFAULT_WORKFLOW)
    expected = BespokeWorkflowFactory.from_preset(
        "default",
        initial_force_field="openff_unconstrained-2.2.0.offxml",
        **{"optimizer.penalty_type": "L1"},
    )
    assert factory == expected
    assert factory.qc_spec.name == "psi4"


def test_left_out_fields_take_bespokefit_defaults() -> None:
    factory = factory_from_bespokefit(
        {"default_qc_specs": [{"program": "xtb", "method": "gfn2-xtb", "basis": None}]}
    )
    assert factory.qc_spec.name == "xtb-gfn2"
    assert (factory.qc_spec.grid_spacing, factory.qc_spec.n_conformers) == (15, 10)
    assert factory.optimizer.penalty_type == "L1"
    assert factory.initial_force_field == "openff_unconstrained-2.2.0.offxml"
    assert factory.fragmentation_engine.type == "WBO"


def test_other_qc_spec_and_fragmenters(document: dict) -> None:
    document["target_templates"][0]["calculation_specification"] = None
    document["default_qc_specs"][0].update(
        program="psi4", method="B3LYP-D3BJ", basis="DZVP", keywords={"e": 1}
    )
    document["fragmentation_engine"] = None
    factory = factory_from_bespokefit(document)
    spec = factory.qc_spec  # no preset has these keywords: the spec itself, keywords as QCSubmit sends them
    assert (spec.name, spec.program, spec.method, spec.basis) == (
        "bespokefit-default",
        "psi4",
        "b3lyp-d3bj",
        "dzvp",
    )
    assert spec.keywords["maxiter"] == 200 and spec.keywords["e"] == 1
    assert factory.fragmentation_engine.type == "none"

    document["fragmentation_engine"] = {"scheme": "Pfizer"}
    document["optimizer"] = "ForceBalance"
    factory = factory_from_bespokefit(document)
    assert factory.fragmentation_engine.type == "Pfizer"
    assert factory.optimizer.penalty_type == "L2"  # BespokeFit's ForceBalanceSchema() default


@pytest.mark.parametrize(
    "change, field, value",
    [
        (lambda d: d["default_qc_specs"].append(d["default_qc_specs"][0]), "default_qc_specs", "2 items"),
        (lambda d: d["optimizer"].update(type="Scipy"), "optimizer.type", '"Scipy"'),
        (lambda d: d["optimizer"].update(job_type="single"), "optimizer.job_type", '"single"'),
        (
            lambda d: d["target_templates"][0].update(type="Vibration"),
            "target_templates[0].type",
            '"Vibration"',
        ),
        (
            lambda d: d["parameter_hyperparameters"][0]["priors"].update(k1=2.0),
            "parameter_hyperparameters[0].priors.k1",
            "2.0",
        ),
        (
            lambda d: d["default_qc_specs"][0].update(implicit_solvent={"units": "au"}),
            "default_qc_specs[0].implicit_solvent",
            '{"units": "au"}',
        ),
        (
            lambda d: d["target_templates"][0]["calculation_specification"].update(program="xtb"),
            "target_templates[0].calculation_specification.program",
            '"xtb" differs from default_qc_specs[0].program "rdkit"',
        ),
        (
            lambda d: d["target_templates"][0]["calculation_specification"].update(grid_spacing=72),
            "target_templates[0].calculation_specification.grid_spacing",
            "72 must divide 180",
        ),
        (lambda d: d.update(initial_force_field="openff-2.2.0.offxml"), "initial_force_field", "constrains"),
        (lambda d: d.update(qc_spec="xtb"), "qc_spec", "no bespoke-fractal equivalent"),
    ],
)
def test_refused_with_one_line(document: dict, change, field: str, value: str) -> None:
    change(document)
    with pytest.raises(WorkflowError) as raised:
        factory_from_bespokefit(document, "w.json")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"w.json (openff-bespokefit workflow): {field}: ")
    assert value in message


def test_detection(document: dict) -> None:
    assert is_bespokefit_workflow(document)
    assert not is_bespokefit_workflow(BespokeWorkflowFactory.from_preset("xtb").model_dump(mode="json"))


def test_builds_job_description(document: dict) -> None:
    factory = factory_from_bespokefit(document).with_changes({"fragmentation_engine": None})
    schema = factory.optimization_schema_from_molecule("CCCC")
    assert schema.qc_spec == factory.qc_spec and schema.optimizer.torsion_prior == 4.0
    assert len(schema.targets) == 1


def test_cli_shows_bespokefit_workflow(tmp_path: Path) -> None:
    result = invoke("workflow", "show", "--workflow-file", str(WORKFLOW), "--set", "drive_parent=true")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["qc_spec"]["name"] == "rdkit-mmff94" and shown["drive_parent"] is True

    saved = tmp_path / "mine.yaml"  # saved in this project's format, read back the same
    assert invoke("workflow", "save", str(saved), "--workflow", str(WORKFLOW)).exit_code == 0
    assert BespokeWorkflowFactory.from_file(saved) == BespokeWorkflowFactory.from_file(WORKFLOW)


def test_cli_refuses_unsupported_file() -> None:
    result = run_cli("workflow", "show", "--workflow-file", str(UNSUPPORTED), env=WIDE)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "target_templates[0].type" in line and '"AbInitio"' in line


def _doc_rows() -> set[tuple[str, str]]:
    """(BespokeFit field, field here) of each row of the doc's mapping table."""
    text = DOC.read_text()
    table = text[text.index("<!-- mapping table -->") : text.index("<!-- end of mapping table -->")]
    rows = re.findall(r"^\| `([^`]+)` \| (`[^`]+`|—) \|", table, flags=re.MULTILINE)
    return {(bespokefit, fractal.strip("`")) for bespokefit, fractal in rows}


def test_doc_table_is_the_mapping() -> None:
    mapping = {(row.bespokefit, row.fractal or "—") for row in FIELDS}
    documented = _doc_rows()
    assert documented - mapping == set(), "rows in docs/bespokefit.md that the mapping lacks"
    assert mapping - documented == set(), "mapping rows missing from docs/bespokefit.md"


def test_every_refusing_row_says_why() -> None:
    for row in FIELDS:
        if row.accepts is not None or row.kind == "one":
            assert row.note, row.bespokefit


def test_mapping_is_not_changed_by_reading(document: dict) -> None:
    before = copy.deepcopy(document)
    factory_from_bespokefit(document)
    assert document == before
