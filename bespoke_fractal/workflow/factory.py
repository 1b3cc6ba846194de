"""The workflow: every choice of a bespoke fit, as one model that reads and writes YAML/JSON."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from openff.toolkit import Molecule
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bespoke_fractal.errors import MoleculeInputError, WorkflowError, validation_line
from bespoke_fractal.forcefield import check_parametrizes, check_unconstrained
from bespoke_fractal.fragmentation import (
    DEFAULT_TARGET_SMARTS,
    AM1BondOrderCache,
    Fragmenter,
    WBOFragmentation,
    check_target_smarts,
    fragment_molecule,
)
from bespoke_fractal.molecules import load_molecule
from bespoke_fractal.schema.optimizers import ForceBalanceSettings, SMIRKSSettings
from bespoke_fractal.schema.qc import QCSpec, get_preset
from bespoke_fractal.schema.workflow import BespokeOptimizationSchema
from bespoke_fractal.workflow.bespokefit import factory_from_bespokefit, is_bespokefit_workflow

DEFAULT_FORCE_FIELD = "openff_unconstrained-2.2.1.offxml"


@cache
def _preset_table() -> dict[str, dict[str, Any]]:
    text = resources.files("bespoke_fractal.workflow").joinpath("presets.yaml").read_text()
    return yaml.safe_load(text)


def list_workflow_presets() -> dict[str, str]:
    """Preset name -> description."""
    return {name: entry.get("description", "") for name, entry in _preset_table().items()}


def _qc_spec(value: Any) -> Any:
    """A QC preset name, or ``{preset: name, <field>: <change>}``, as a QCSpec."""
    if isinstance(value, str):
        value = {"preset": value}
    if isinstance(value, dict) and "preset" in value:
        changes = dict(value)
        try:
            return get_preset(changes.pop("preset"), **changes)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    return value


class BespokeWorkflowFactory(BaseModel):
    """How to fit bespoke torsions: force field, target torsions, fragmenter, QC, optimiser.

    Start from :meth:`from_preset` (``default``, ``xtb``, ``debug``) or :meth:`from_file`,
    change fields with :meth:`with_changes`, save with :meth:`to_file`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_force_field: str = Field(
        DEFAULT_FORCE_FIELD, description="installed .offxml name or path; must be unconstrained"
    )
    target_torsion_smirks: list[str] = Field(
        default_factory=lambda: [DEFAULT_TARGET_SMARTS],
        min_length=1,
        description="SMARTS of the bonds to fit; atoms :1 and :2 are the bond",
    )
    fragmentation_engine: Fragmenter = Field(
        default_factory=WBOFragmentation, description="WBO (default), Pfizer, or none"
    )
    qc_spec: QCSpec = Field(
        default_factory=lambda: _qc_spec(_preset_table()["default"]["qc_spec"]),
        description="QC preset and torsion drive grid (grid_spacing, n_conformers)",
    )
    optimizer: ForceBalanceSettings = Field(default_factory=ForceBalanceSettings)
    smirks_settings: SMIRKSSettings = Field(default_factory=SMIRKSSettings)
    drive_parent: bool = Field(
        False,
        description="also drive each target bond on the whole parent molecule (same QC spec) "
        "and score the fit on it; not fitted to",
    )

    @field_validator("initial_force_field")
    @classmethod
    def _force_field(cls, value: str) -> str:
        try:
            return check_unconstrained(value)
        except WorkflowError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("target_torsion_smirks")
    @classmethod
    def _smarts(cls, value: list[str]) -> list[str]:
        return [check_target_smarts(smarts) for smarts in value]

    @field_validator("fragmentation_engine", mode="before")
    @classmethod
    def _fragmenter(cls, value: Any) -> Any:
        if value is None:
            return {"type": "none"}
        if isinstance(value, str):
            return {"type": {"wbo": "WBO", "pfizer": "Pfizer"}.get(value.lower(), value)}
        return value

    @field_validator("qc_spec", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        return _qc_spec(value)

    # ---- presets and files -------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> BespokeWorkflowFactory:
        """A named preset (``default``, ``xtb``, ``debug``) with optional dotted changes."""
        table = _preset_table()
        if name not in table:
            raise WorkflowError(f"unknown workflow preset '{name}' (known: {', '.join(table)})")
        fields = {k: v for k, v in table[name].items() if k != "description"}
        return cls._validated(fields, f"preset '{name}'").with_changes(changes)

    @classmethod
    def from_file(cls, path: str | Path) -> BespokeWorkflowFactory:
        """Read a workflow written by :meth:`to_file` (or by hand), or an openff-bespokefit
        workflow file (``docs/bespokefit.md``), from .yaml/.yml/.json."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise WorkflowError(f"{path}: cannot read workflow file ({exc.strerror})") from None
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise WorkflowError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first}") from None
        if not isinstance(data, dict):
            raise WorkflowError(f"{path}: a workflow file must hold a mapping of fields")
        if is_bespokefit_workflow(data):
            return factory_from_bespokefit(data, str(path))
        return cls._validated(data, str(path))

    def to_file(self, path: str | Path) -> Path:
        """Write as JSON (``.json``) or YAML (anything else)."""
        path = Path(path)
        data = self.model_dump(mode="json")
        text = (
            json.dumps(data, indent=2) + "\n"
            if path.suffix.lower() == ".json"
            else yaml.safe_dump(data, sort_keys=False)
        )
        path.write_text(text)
        return path

    def with_changes(self, changes: dict[str, Any]) -> BespokeWorkflowFactory:
        """A copy with fields changed by dotted name, e.g. ``{"qc_spec.grid_spacing": 30}``."""
        if not changes:
            return self
        data = self.model_dump(mode="json")
        for dotted, value in changes.items():
            *parents, last = dotted.split(".")
            node = data
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise WorkflowError(f"'{dotted}': '{part}' is not a group of settings")
                node = node[part]
            node[last] = copy.deepcopy(value)
        return self._validated(data, "changed workflow")

    @classmethod
    def _validated(cls, data: dict[str, Any], where: str) -> BespokeWorkflowFactory:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise WorkflowError(f"{where}: {validation_line(exc)}") from None

    # ---- molecules -> job descriptions -------------------------------------------------

    def optimization_schema_from_molecule(
        self, molecule: Molecule | str | Path, cache: AM1BondOrderCache | None = None
    ) -> BespokeOptimizationSchema:
        """The job description of one molecule: its fragments and, for every target torsion,
        the fragment it is driven on and the fragment -> parent atom map.

        Raises MoleculeInputError, NothingToFitError or FragmentationError with one line.
        """
        molecule = load_molecule(molecule)
        smiles = molecule.to_smiles(explicit_hydrogens=False)
        unsupported = self.qc_spec.unsupported_elements(atom.symbol for atom in molecule.atoms)
        if unsupported:
            raise MoleculeInputError(
                f"{smiles}: QC preset '{self.qc_spec.name}' ({self.qc_spec.label}) cannot handle "
                f"element{'s' if len(unsupported) > 1 else ''} {', '.join(unsupported)}"
            )
        check_parametrizes(self.initial_force_field, molecule)
        fragmented = fragment_molecule(
            molecule, self.target_torsion_smirks, self.fragmentation_engine, cache or AM1BondOrderCache()
        )
        return BespokeOptimizationSchema(
            id=self.job_id(molecule),
            smiles=fragmented.parent_smiles,
            initial_force_field=self.initial_force_field,
            target_torsion_smirks=self.target_torsion_smirks,
            qc_spec=self.qc_spec,
            optimizer=self.optimizer,
            smirks_settings=self.smirks_settings,
            fragmentation=fragmented,
            drive_parent=self.drive_parent,
        )

    def job_id(self, molecule: Molecule) -> str:
        """Stable id of (molecule, workflow): the same molecule and workflow give the same id."""
        # drive_parent is hashed only when set: jobs without it keep the ids they had before it existed
        settings = self.model_dump(mode="json", exclude=None if self.drive_parent else {"drive_parent"})
        text = json.dumps([molecule.to_smiles(isomeric=True), settings], sort_keys=True)
        return "bf-" + hashlib.sha256(text.encode()).hexdigest()[:12]
