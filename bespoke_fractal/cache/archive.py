"""The drive archive: completed torsion drives as a pydantic model, and its file (JSON, .gz or .bz2).

Everything a replay needs is kept: the specification, the molecule (mapped SMILES: the atom
order of every geometry in the drive), the driven dihedral, and each completed constrained
optimisation with its grid angle, initial and final geometry (bohr), energies (hartree) and, when
the source kept it, the final gradient. The exporter writes geometries in the canonical atom order
of :mod:`bespoke_fractal.schema.identity`; the importer re-derives that order, so a file made with
another RDKit version still maps onto the right atoms.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bespoke_fractal.errors import BespokeFractalError, validation_line
from bespoke_fractal.schema.identity import Dihedral
from bespoke_fractal.schema.qc import QCSpec

ARCHIVE_FORMAT = "bespoke-fractal-torsiondrive-archive"
COMPRESSED_SUFFIXES = (".gz", ".bz2")


class CacheError(BespokeFractalError):
    """A drive archive, source or destination could not be read, written or used."""


class DriveSpecification(BaseModel):
    """What decided a source drive's result, in :class:`QCSpec` terms."""

    model_config = ConfigDict(extra="forbid")

    optimization_program: str = "geometric"
    program: str
    method: str
    basis: str | None = None
    keywords: dict[str, Any] = Field(default_factory=dict)
    grid_spacing: int
    geometric_keywords: dict[str, Any] = Field(default_factory=dict)
    energy_upper_limit: float | None = None
    energy_decrease_thresh: float | None = None
    dihedral_ranges: list[list[int]] | None = None
    n_conformers: int = Field(1, description="starting geometries of the source drive")

    @classmethod
    def from_qcportal(cls, specification, n_conformers: int) -> DriveSpecification:
        """From a qcportal TorsiondriveSpecification of one record (1-D drives only)."""
        optimization = specification.optimization_specification
        qc = optimization.qc_specification
        keywords = specification.keywords
        if len(keywords.dihedrals) != 1 or len(keywords.grid_spacing) != 1:
            raise CacheError(f"a {len(keywords.dihedrals)}-D torsion drive cannot be imported (1-D only)")
        return cls(
            optimization_program=optimization.program.lower(),
            program=qc.program.lower(),
            method=qc.method.lower(),
            basis=qc.basis.lower() if qc.basis else None,
            keywords=dict(qc.keywords or {}),
            grid_spacing=int(keywords.grid_spacing[0]),
            geometric_keywords=dict(optimization.keywords or {}),
            energy_upper_limit=keywords.energy_upper_limit,
            energy_decrease_thresh=keywords.energy_decrease_thresh,
            dihedral_ranges=[list(r) for r in keywords.dihedral_ranges] if keywords.dihedral_ranges else None,
            n_conformers=n_conformers,
        )

    def differences(self, spec: QCSpec) -> list[str]:
        """What differs from ``spec``, one short phrase each (empty: the same science).

        The number of starting conformers is not compared: the destination drive starts from
        the preset's conformers and is answered with the source's grid-point results.
        """
        ours = {
            "optimization program": self.optimization_program,
            "program": self.program,
            "method": self.method,
            "basis": self.basis,
            "QC keywords": self.keywords,
            "grid spacing": self.grid_spacing,
            "geomeTRIC keywords": self.geometric_keywords,
            "energy_upper_limit": self.energy_upper_limit,
            "energy_decrease_thresh": self.energy_decrease_thresh,
            "dihedral_ranges": self.dihedral_ranges,
        }
        theirs = {
            "optimization program": "geometric",
            "program": spec.program,
            "method": spec.method,
            "basis": spec.basis,
            "QC keywords": spec.keywords,
            "grid spacing": spec.grid_spacing,
            "geomeTRIC keywords": spec.geometric_keywords,
            "energy_upper_limit": spec.energy_upper_limit,
            "energy_decrease_thresh": None,
            "dihedral_ranges": None,
        }
        return [
            f"{name} {_short(ours[name])} (preset: {_short(theirs[name])})"
            for name in ours
            if _canonical(ours[name]) != _canonical(theirs[name])
        ]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class ArchivedOptimization(BaseModel):
    """One completed constrained optimisation of a drive, in the drive's atom order."""

    model_config = ConfigDict(extra="forbid")

    angle: int = Field(description="grid angle of the driven dihedral, degrees")
    source_record_id: int
    initial_geometry_bohr: list[list[float]]
    final_geometry_bohr: list[list[float]]
    energies: list[float] = Field(description="hartree, every step; the last is the result")
    final_gradient: list[list[float]] | None = Field(None, description="hartree/bohr at the final geometry")
    provenance: dict[str, Any] = Field(default_factory=dict, description="the source's, as stored there")
    gradient_provenance: dict[str, Any] | None = None


class ArchivedDrive(BaseModel):
    """One completed 1-D torsion drive from a source."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="server address or file the drive was read from")
    source_record_id: int
    entry_name: str | None = None
    mapped_smiles: str = Field(description="atom map number = index + 1 of every geometry here")
    dihedral: Dihedral = Field(description="driven dihedral in that atom order")
    molecular_multiplicity: int = 1
    spec: DriveSpecification
    final_energies: dict[int, float] = Field(description="lowest energy per grid angle, hartree")
    optimizations: list[ArchivedOptimization]

    @property
    def label(self) -> str:
        return f"{self.source} record {self.source_record_id}"


class DriveArchive(BaseModel):
    """Completed torsion drives, as carried between servers (the file format)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["bespoke-fractal-torsiondrive-archive"] = ARCHIVE_FORMAT
    version: Literal[1] = 1
    created_on: datetime = Field(default_factory=lambda: datetime.now(UTC))
    created_by: str = Field(default_factory=lambda: f"bespoke-fractal {package_version()}")
    drives: list[ArchivedDrive] = Field(default_factory=list)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bespoke-fractal")
    except PackageNotFoundError:
        return "unknown"


def _opener(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open
    if suffix == ".bz2":
        return bz2.open
    return open


def write_archive(archive: DriveArchive, path: str | Path) -> Path:
    """Write ``archive`` as JSON, gzip- or bzip2-compressed when the name ends in .gz or .bz2."""
    path = Path(path)
    if path.suffix.lower() not in (".json", *COMPRESSED_SUFFIXES):
        raise CacheError(f"{path}: archive names end in .json, .json.gz or .json.bz2")
    text = archive.model_dump_json()
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _opener(path)(tmp, "wt", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CacheError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def read_archive(path: str | Path) -> DriveArchive:
    """Read a file written by :func:`write_archive`; one clear line if it is not one."""
    path = Path(path)
    try:
        with _opener(path)(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise CacheError(f"{path} does not exist") from None
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as exc:
        raise CacheError(f"{path} cannot be read (corrupt or not {_kind(path)}): {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CacheError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != ARCHIVE_FORMAT:
        raise CacheError(f"{path} is not a bespoke-fractal drive archive (no format '{ARCHIVE_FORMAT}')")
    try:
        return DriveArchive.model_validate(data)
    except ValidationError as exc:
        raise CacheError(f"{path} is a malformed drive archive: {validation_line(exc)}") from None


def _kind(path: Path) -> str:
    return {".gz": "gzip", ".bz2": "bzip2"}.get(path.suffix.lower(), "UTF-8 text")
