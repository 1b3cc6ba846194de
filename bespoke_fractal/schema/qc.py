"""The QC specification of a torsion drive, and the presets that name common ones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rdkit import Chem

# OpenFF's geomeTRIC settings for torsion drives (dlc fails on constrained drives; tric works).
DEFAULT_GEOMETRIC_KEYWORDS: dict[str, Any] = {
    "coordsys": "tric",
    "enforce": 0.1,
    "reset": True,
    "qccnv": True,
    "epsilon": 0.0,
}


class QCSpec(BaseModel):
    """Everything that decides the result of a 1-D torsion drive, apart from the molecule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="preset name or a user label")
    description: str = ""
    program: str = Field(description="QC program run by qcengine, e.g. psi4, xtb, rdkit")
    method: str
    basis: str | None = None
    keywords: dict[str, Any] = Field(default_factory=dict)
    grid_spacing: int = Field(15, description="torsion grid spacing in degrees")
    n_conformers: int = Field(1, ge=1, description="starting conformers per drive")
    geometric_keywords: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_GEOMETRIC_KEYWORDS))
    energy_upper_limit: float | None = Field(
        None, description="torsiondrive: skip grid points this far (Hartree) above the minimum"
    )
    aliases: tuple[str, ...] = ()
    compute_tag: str = Field(
        "*",
        min_length=1,
        description="QCFractal compute tag of new drives: only managers listing it (or '*') run "
        "them, so one server can feed several clusters; routing only, not part of the result",
    )
    elements: tuple[str, ...] = Field(
        (), description="elements the method handles, symbols or ranges such as 'H-Rn'; empty: any"
    )

    @field_validator("program", "method")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("basis")
    @classmethod
    def _basis(cls, value: str | None) -> str | None:
        return value.strip().lower() if value else None

    @field_validator("elements")
    @classmethod
    def _elements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _atomic_numbers(value)
        return value

    @field_validator("grid_spacing")
    @classmethod
    def _spacing(cls, value: int) -> int:
        # torsiondrive never leaves its first grid point unless the spacing divides 180
        # (measured with torsiondrive 1.2: 72 and 120 loop forever, 15-90 work).
        if value <= 0 or 180 % value:
            raise ValueError(f"grid spacing {value} must divide 180 (e.g. 15, 30, 45, 60, 90)")
        return value

    def science(self) -> dict[str, Any]:
        """The fields that change the computed result (not names or descriptions)."""
        return self.model_dump(exclude={"name", "description", "aliases", "elements", "compute_tag"})

    def unsupported_elements(self, symbols: Iterable[str]) -> list[str]:
        """The symbols among `symbols` this method cannot do, sorted and unique."""
        if not self.elements:
            return []
        allowed = _atomic_numbers(self.elements)
        return sorted({s for s in symbols if _ATOMIC_NUMBER[s] not in allowed})

    @property
    def fingerprint(self) -> str:
        """Short hash of :meth:`science`; equal specs have equal fingerprints."""
        text = json.dumps(self.science(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def dataset_name(self) -> str:
        """The TorsiondriveDataset that holds every drive of this spec on a server."""
        basis = self.basis or "none"
        return (
            f"bespoke-fractal td {self.program}/{self.method}/{basis} "
            f"grid{self.grid_spacing} conf{self.n_conformers} [{self.fingerprint}]"
        )

    @property
    def label(self) -> str:
        basis = f"/{self.basis}" if self.basis else ""
        return f"{self.program} {self.method}{basis}"

    def to_qcportal(self):
        """qcportal TorsiondriveSpecification (dihedral and grid come with each entry)."""
        from qcportal.optimization import OptimizationSpecification
        from qcportal.singlepoint import QCSpecification
        from qcportal.torsiondrive import TorsiondriveKeywords, TorsiondriveSpecification

        return TorsiondriveSpecification(
            program="torsiondrive",
            optimization_specification=OptimizationSpecification(
                program="geometric",
                keywords=self.geometric_keywords,
                qc_specification=QCSpecification(
                    program=self.program,
                    driver="gradient",
                    method=self.method,
                    basis=self.basis,
                    keywords=self.keywords,
                ),
            ),
            keywords=TorsiondriveKeywords(
                dihedrals=[],
                grid_spacing=[],
                energy_upper_limit=self.energy_upper_limit,
            ),
        )


_TABLE = Chem.GetPeriodicTable()
_ATOMIC_NUMBER = {_TABLE.GetElementSymbol(z): z for z in range(1, 119)}


def _atomic_numbers(elements: Iterable[str]) -> set[int]:
    numbers: set[int] = set()
    for item in elements:
        first, _, last = item.partition("-")
        try:
            low = _ATOMIC_NUMBER[first.strip()]
            high = _ATOMIC_NUMBER[last.strip()] if last else low
        except KeyError:
            raise ValueError(f"unknown element in '{item}'") from None
        numbers.update(range(low, high + 1))
    return numbers


@cache
def _preset_table() -> dict[str, QCSpec]:
    text = resources.files("bespoke_fractal.schema").joinpath("qc_presets.yaml").read_text()
    return {name: QCSpec(name=name, **fields) for name, fields in yaml.safe_load(text).items()}


def list_presets() -> list[QCSpec]:
    return list(_preset_table().values())


def get_preset(name: str, **changes: Any) -> QCSpec:
    """A preset by name or alias, optionally with some fields changed (e.g. grid_spacing=30)."""
    table = _preset_table()
    spec = table.get(name) or next((s for s in table.values() if name in s.aliases), None)
    if spec is None:
        known = ", ".join(sorted(table))
        raise KeyError(f"unknown QC preset '{name}' (known: {known})")
    if changes:
        spec = QCSpec(**{**spec.model_dump(), **changes})
    return spec
