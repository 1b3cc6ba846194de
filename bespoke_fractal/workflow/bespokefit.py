"""Read an openff-bespokefit workflow file (what its ``BespokeWorkflowFactory.to_file`` writes) as
this project's workflow.

Every BespokeFit field is one row of :data:`FIELDS`: where its value goes here, or which values
are accepted because they mean the same as here. A field with no row, or a value a row does not
accept, is refused with one line naming the field and the value. ``docs/bespokefit.md`` lists
the table (:func:`markdown_table` writes it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from bespoke_fractal.errors import WorkflowError

if TYPE_CHECKING:
    from bespoke_fractal.workflow.factory import BespokeWorkflowFactory


@dataclass(frozen=True)
class Default:
    """A BespokeFit default accepted because it does what this project does. ``load`` gives the
    value when it is read on first use; ``partial``: a mapping may leave out keys (they keep
    their default)."""

    value: Any = None
    load: Callable[[], Any] | None = None
    partial: bool = False

    def matches(self, value: Any) -> bool:
        expected = self.load() if self.load is not None else self.value
        if self.partial and isinstance(value, Mapping) and isinstance(expected, Mapping):
            return all(key in expected and expected[key] == item for key, item in value.items())
        return value == expected


@dataclass(frozen=True)
class FieldMap:
    """One openff-bespokefit workflow field and what becomes of it here.

    ``bespokefit`` is the field's dotted path, ``[]`` standing for the one item of a list.
    ``kind``: ``value`` (a leaf), ``group`` (a mapping whose fields have rows of their own; null
    goes to ``fractal`` if set) or ``one`` (a list of exactly one item).
    ``fractal`` is the dotted field here that receives the value (``None``: used nowhere).
    ``accepts``: the only values taken (``None``: any value the field here takes).
    """

    bespokefit: str
    fractal: str | None = None
    accepts: tuple[Any, ...] | None = None
    note: str = ""
    kind: Literal["value", "group", "one"] = "value"

    def accepted(self, value: Any) -> bool:
        if self.accepts is None:
            return True
        return any(
            item.matches(value) if isinstance(item, Default) else item == value for item in self.accepts
        )


_GEOMETRIC_DEFAULT = Default(
    {
        "program": "geometric",
        "coordsys": "dlc",
        "enforce": 0.1,
        "epsilon": 0.0,
        "reset": True,
        "qccnv": True,
        "molcnv": False,
        "check": 0,
        "trust": 0.1,
        "tmax": 0.3,
        "maxiter": 300,
        "convergence_set": "GAU",
        "constraints": {},
        "converge": [],
    },
    partial=True,
)


def _functional_groups() -> dict[str, str]:
    from openff.fragmenter.utils import default_functional_groups

    return default_functional_groups()


_OPTIMIZER_FIELDS = (
    "max_iterations",
    "penalty_type",
    "step_convergence_threshold",
    "objective_convergence_threshold",
    "gradient_convergence_threshold",
    "n_criteria",
    "eigenvalue_lower_bound",
    "finite_difference_h",
    "penalty_additive",
    "initial_trust_radius",
    "minimum_trust_radius",
    "error_tolerance",
    "adaptive_factor",
    "adaptive_damping",
    "normalize_weights",
)
_TEMPLATE = "target_templates[]"
_CALCULATION = f"{_TEMPLATE}.calculation_specification"
_QC = "default_qc_specs[]"

FIELDS: tuple[FieldMap, ...] = (
    FieldMap(
        "initial_force_field",
        "initial_force_field",
        note="must be unconstrained; left out: BespokeFit's `openff_unconstrained-2.2.0.offxml`",
    ),
    FieldMap("target_torsion_smirks", "target_torsion_smirks"),
    FieldMap("smirk_settings", kind="group"),
    FieldMap("smirk_settings.expand_torsion_terms", "smirks_settings.expand_torsion_terms"),
    FieldMap("smirk_settings.generate_bespoke_terms", "smirks_settings.generate_bespoke_terms"),
    FieldMap(
        "fragmentation_engine",
        "fragmentation_engine",
        kind="group",
        note="null: `none` (every torsion driven on the whole molecule)",
    ),
    FieldMap(
        "fragmentation_engine.scheme",
        "fragmentation_engine.type",
        accepts=("WBO", "Pfizer"),
        note="only `WBO` or `Pfizer`",
    ),
    FieldMap(
        "fragmentation_engine.functional_groups",
        accepts=(Default(load=_functional_groups),),
        note="only openff-fragmenter's default groups",
    ),
    FieldMap("fragmentation_engine.threshold", "fragmentation_engine.threshold"),
    FieldMap("fragmentation_engine.heuristic", "fragmentation_engine.heuristic"),
    FieldMap(
        "fragmentation_engine.keep_non_rotor_ring_substituents",
        "fragmentation_engine.keep_non_rotor_ring_substituents",
    ),
    FieldMap("fragmentation_engine.wbo_options", kind="group"),
    FieldMap(
        "fragmentation_engine.wbo_options.method",
        accepts=("am1-wiberg-elf10",),
        note="only `am1-wiberg-elf10`",
    ),
    FieldMap("fragmentation_engine.wbo_options.max_conformers", "fragmentation_engine.max_conformers"),
    FieldMap("fragmentation_engine.wbo_options.rms_threshold", "fragmentation_engine.rms_threshold"),
    FieldMap("default_qc_specs", kind="one", note="exactly one QC spec (every drive uses it)"),
    FieldMap(
        f"{_QC}.program",
        "qc_spec.program",
        note="a QC preset when program, method, basis and keywords match one",
    ),
    FieldMap(f"{_QC}.method", "qc_spec.method"),
    FieldMap(f"{_QC}.basis", "qc_spec.basis"),
    FieldMap(f"{_QC}.keywords", "qc_spec.keywords"),
    FieldMap(
        f"{_QC}.maxiter",
        "qc_spec.keywords.maxiter",
        note="psi4 only, as QCSubmit passes it; ignored for others",
    ),
    FieldMap(
        f"{_QC}.scf_properties",
        "qc_spec.keywords.scf_properties",
        note="psi4 only, as QCSubmit passes it; ignored for others",
    ),
    FieldMap(f"{_QC}.spec_name", "qc_spec.name", note="`bespokefit-<spec_name>`, when no preset matches"),
    FieldMap(f"{_QC}.spec_description", "qc_spec.description", note="when no preset matches"),
    FieldMap(f"{_QC}.store_wavefunction", accepts=("none",), note="only `none`"),
    FieldMap(f"{_QC}.implicit_solvent", accepts=(None,), note="only null: gas phase"),
    FieldMap(
        "optimizer",
        kind="group",
        note="left out: ForceBalance with `penalty_type: L1` (BespokeFit's default; L2 here); "
        "the string `ForceBalance`: ForceBalance's own defaults",
    ),
    FieldMap("optimizer.type", "optimizer.type", accepts=("ForceBalance",), note="only `ForceBalance`"),
    *(FieldMap(f"optimizer.{name}", f"optimizer.{name}") for name in _OPTIMIZER_FIELDS),
    FieldMap("optimizer.job_type", "optimizer.job_type", accepts=("optimize",), note="only `optimize`"),
    FieldMap("optimizer.extras", accepts=({},), note="only `{}`"),
    FieldMap("target_templates", kind="one", note="exactly one target"),
    FieldMap(f"{_TEMPLATE}.type", accepts=("TorsionProfile",), note="only `TorsionProfile`"),
    FieldMap(f"{_TEMPLATE}.weight", "optimizer.target.weight"),
    FieldMap(f"{_TEMPLATE}.attenuate_weights", "optimizer.target.attenuate_weights"),
    FieldMap(f"{_TEMPLATE}.energy_denominator", "optimizer.target.energy_denominator"),
    FieldMap(f"{_TEMPLATE}.energy_cutoff", "optimizer.target.energy_cutoff"),
    FieldMap(
        f"{_TEMPLATE}.reference_data",
        accepts=(None,),
        note="only null; bring existing drives with `bespoke-fractal cache import`",
    ),
    FieldMap(f"{_TEMPLATE}.extras", accepts=({},), note="only `{}`"),
    FieldMap(_CALCULATION, kind="group", note="null: grid 15°, 10 conformers, the QC spec above"),
    FieldMap(f"{_CALCULATION}.type", accepts=("torsion1d",), note="only `torsion1d`"),
    FieldMap(f"{_CALCULATION}.program", "qc_spec.program", note="must agree with `default_qc_specs`"),
    FieldMap(f"{_CALCULATION}.model", kind="group"),
    FieldMap(f"{_CALCULATION}.model.method", "qc_spec.method", note="must agree with `default_qc_specs`"),
    FieldMap(f"{_CALCULATION}.model.basis", "qc_spec.basis", note="must agree with `default_qc_specs`"),
    FieldMap(f"{_CALCULATION}.grid_spacing", "qc_spec.grid_spacing"),
    FieldMap(f"{_CALCULATION}.n_conformers", "qc_spec.n_conformers"),
    FieldMap(f"{_CALCULATION}.scan_range", accepts=(None,), note="only null: the full 360°"),
    FieldMap(
        f"{_CALCULATION}.optimization_spec",
        accepts=(_GEOMETRIC_DEFAULT,),
        note="only BespokeFit's default; geomeTRIC runs in TRIC coordinates here",
    ),
    FieldMap("parameter_hyperparameters", kind="one", note="exactly one (the torsion prior)"),
    FieldMap("parameter_hyperparameters[].type", accepts=("ProperTorsions",), note="only `ProperTorsions`"),
    FieldMap("parameter_hyperparameters[].priors", kind="group"),
    FieldMap("parameter_hyperparameters[].priors.k", "optimizer.torsion_prior"),
)
"""The whole mapping, in the order fields are checked (a ``type`` before the fields it decides)."""

_ROWS = {row.bespokefit: row for row in FIELDS}
_ORDER = {row.bespokefit: index for index, row in enumerate(FIELDS)}

# What openff-bespokefit uses for a field left out of the file.
_FACTORY_DEFAULTS: dict[str, Any] = {
    "initial_force_field": "openff_unconstrained-2.2.0.offxml",
    "optimizer": {"type": "ForceBalance", "penalty_type": "L1"},
    "fragmentation_engine": {"scheme": "WBO"},
    "default_qc_specs": [{}],
    "target_templates": [{"type": "TorsionProfile"}],
}
# openff-qcsubmit's QCSpec and openff-bespokefit's Torsion1DTaskSpec defaults.
_QC_DEFAULTS: dict[str, Any] = {
    "program": "psi4",
    "method": "b3lyp-d3bj",
    "basis": "dzvp",
    "keywords": {},
    "keywords.maxiter": 200,
    "keywords.scf_properties": ["dipole", "quadrupole", "wiberg_lowdin_indices", "mayer_indices"],
    "name": "default",
    "description": "Standard OpenFF optimization quantum chemistry specification.",
    "grid_spacing": 15,
    "n_conformers": 10,
}
_PSI4_ONLY = ("keywords.maxiter", "keywords.scf_properties")
# keys found only in openff-bespokefit files (a fitting schema holds the last two)
_BESPOKEFIT_KEYS = ("default_qc_specs", "target_templates", "parameter_hyperparameters", "smirk_settings")
_SCHEMA_KEYS = ("stages", "initial_force_field_hash")


def is_bespokefit_workflow(data: Mapping[str, Any]) -> bool:
    """Whether a workflow file's mapping was written by openff-bespokefit."""
    fragmenter, optimizer = data.get("fragmentation_engine"), data.get("optimizer")
    return (
        any(key in data for key in _BESPOKEFIT_KEYS + _SCHEMA_KEYS)
        or (isinstance(fragmenter, Mapping) and "scheme" in fragmenter)
        or (isinstance(optimizer, Mapping) and "extras" in optimizer)
    )


class _Refused(Exception):
    """One field refused: ``str`` is the line without the file name."""


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Converter:
    """Walks a BespokeFit mapping in :data:`FIELDS` order and stages this project's fields."""

    def __init__(self) -> None:
        self.staged: dict[str, tuple[Any, str]] = {}  # fractal path -> (value, bespokefit field)

    def walk(self, value: Any, path: str, shown: str) -> None:
        row = _ROWS.get(path)
        if row is None:
            raise _Refused(f"{shown}: no bespoke-fractal equivalent (value {_show(value)})")
        if row.kind == "one":
            if not isinstance(value, list) or len(value) != 1:
                count = f"{len(value)} items" if isinstance(value, list) else _show(value)
                raise _Refused(f"{shown}: {count}, but bespoke-fractal takes {row.note}")
            self.fields_of(value[0], f"{path}[]", f"{shown}[0]")
        elif row.kind == "group" and value is not None:
            self.fields_of(value, path, shown)
        elif not row.accepted(value):
            raise _Refused(f"{shown}: {_show(value)} is not supported here; {row.note}")
        elif row.fractal is not None:
            self.stage(row.fractal, value, shown)

    def fields_of(self, value: Any, path: str, shown: str) -> None:
        """Walk each field of a mapping, a ``type`` before the fields it decides."""
        if not isinstance(value, Mapping):
            raise _Refused(f"{shown}: {_show(value)} is not a mapping of fields")
        for key in sorted(value, key=lambda key: _ORDER.get(f"{path}.{key}", len(_ORDER))):
            self.walk(value[key], f"{path}.{key}", f"{shown}.{key}")

    def stage(self, fractal: str, value: Any, shown: str) -> None:
        if fractal in self.staged:
            earlier, source = self.staged[fractal]
            if _normal(earlier) != _normal(value):
                raise _Refused(
                    f"{shown}: {_show(value)} differs from {source} {_show(earlier)}; "
                    "bespoke-fractal runs every drive with one QC spec"
                )
            return
        self.staged[fractal] = (value, shown)

    def fields(self) -> dict[str, Any]:
        """This project's workflow fields, nested, with the QC spec resolved."""
        data: dict[str, Any] = {}
        qc = {key: value for key, (value, _) in self.staged.items() if key.startswith("qc_spec.")}
        for dotted, (value, _) in self.staged.items():
            if not dotted.startswith("qc_spec."):
                _set(data, dotted, value)
        data["qc_spec"] = _qc_spec({key.removeprefix("qc_spec."): value for key, value in qc.items()})
        return data

    def source(self, loc: tuple[Any, ...]) -> str | None:
        """The BespokeFit field that set this project's field at ``loc`` (a validation error's)."""
        parts = [str(part) for part in loc if part not in ("WBO", "Pfizer", "none")]
        while parts:
            staged = self.staged.get(".".join(parts))
            if staged is not None:
                return staged[1]
            parts.pop()
        return None


def _normal(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def _qc_spec(staged: dict[str, Any]) -> dict[str, Any]:
    """A QC preset with the grid when program, method, basis and keywords match one; otherwise
    the spec itself. Keywords are built as QCSubmit builds them: maxiter and SCF properties
    (psi4 only), then the spec's own keywords."""
    from bespoke_fractal.schema.qc import list_presets

    fields = {**_QC_DEFAULTS, **staged}
    program, method = _normal(fields["program"]), _normal(fields["method"])
    basis = _normal(fields["basis"]) or None
    extra = {key.removeprefix("keywords."): fields[key] for key in _PSI4_ONLY} if program == "psi4" else {}
    own = fields["keywords"] or {}
    keywords = {**extra, **own} if isinstance(own, Mapping) else own
    grid = {"grid_spacing": fields["grid_spacing"], "n_conformers": fields["n_conformers"]}
    wanted = (program, method, basis, keywords)
    for preset in list_presets():
        if (preset.program, preset.method, preset.basis, preset.keywords) == wanted:
            return {"preset": preset.name, **grid}
    return {
        "name": f"bespokefit-{fields['name']}",
        "description": fields["description"],
        "program": program,
        "method": method,
        "basis": basis,
        "keywords": keywords,
        **grid,
    }


def convert(data: Mapping[str, Any]) -> tuple[dict[str, Any], _Converter]:
    """This project's workflow fields from a BespokeFit workflow mapping; raises ``_Refused``."""
    if any(key in data for key in _SCHEMA_KEYS):
        raise _Refused(
            "an openff-bespokefit optimisation schema (one molecule's fit), not a workflow; "
            "write the workflow with BespokeWorkflowFactory.to_file"
        )
    document = {**_FACTORY_DEFAULTS, **data}
    optimizer = document["optimizer"]
    if isinstance(optimizer, str) and optimizer.lower() == "forcebalance":
        document["optimizer"] = {"type": "ForceBalance"}  # BespokeFit's get_optimizer: its defaults
    converter = _Converter()
    for key in sorted(document, key=lambda key: _ORDER.get(key, len(_ORDER))):
        converter.walk(document[key], key, key)
    return converter.fields(), converter


def factory_from_bespokefit(data: Mapping[str, Any], where: str = "") -> BespokeWorkflowFactory:
    """This project's workflow from an openff-bespokefit workflow mapping, or a WorkflowError
    of one line naming the BespokeFit field and value that have no equivalent here; ``where``
    (a file name) starts the line."""
    from bespoke_fractal.workflow.factory import BespokeWorkflowFactory

    prefix = f"{where} (openff-bespokefit workflow)" if where else "openff-bespokefit workflow"
    try:
        fields, converter = convert(data)
    except _Refused as exc:
        raise WorkflowError(f"{prefix}: {exc}") from None
    try:
        return BespokeWorkflowFactory.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = converter.source(error["loc"]) or ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        raise WorkflowError(f"{prefix}: {field}: {message}") from None


def markdown_table() -> str:
    """:data:`FIELDS` as the Markdown table of ``docs/bespokefit.md``."""
    lines = ["| openff-bespokefit field | bespoke-fractal field | notes |", "|---|---|---|"]
    for row in FIELDS:
        fractal = f"`{row.fractal}`" if row.fractal else "—"
        lines.append(f"| `{row.bespokefit}` | {fractal} | {row.note} |")
    return "\n".join(lines)
