"""Compute-manager configs, validated by qcfractalcompute's own models before they are written.

Local managers (:mod:`bespoke_fractal.manager.local`) and managers from a scheduler config
(:mod:`bespoke_fractal.manager.cluster`) both write their config through
:func:`write_compute_config`, so a config qcfractalcompute would refuse is refused before any
manager starts, with one clear line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from bespoke_fractal.errors import ManagerError, validation_line
from bespoke_fractal.files import write_private

if TYPE_CHECKING:
    from qcfractalcompute.config import FractalComputeConfig


def compute_config(
    data: Mapping[str, Any], base_folder: Path, password: str | None = None
) -> FractalComputeConfig:
    """qcfractalcompute's model of ``data`` as ``qcfractal-compute-manager --config`` reads it
    (``QCF_COMPUTE_*`` variables override; ``base_folder``: the file's folder unless ``data``
    names one; ``password`` as the manager's environment gives it), or one clear line."""
    from qcfractalcompute.config import FractalComputeConfig

    document = {**data, "base_folder": str(data.get("base_folder") or base_folder)}
    if password is not None:
        document["server"] = {**document.get("server", {}), "password": password}
    try:
        return FractalComputeConfig(**document)
    except ValidationError as exc:
        raise ManagerError(f"manager config: {validation_line(exc)}") from None


def write_compute_config(
    path: Path, data: Mapping[str, Any], password: str | None = None
) -> FractalComputeConfig:
    """Validate ``data`` (:func:`compute_config`, base folder: ``path``'s) and write it to
    ``path`` (0600). ``password`` is validated, not written."""
    config = compute_config(data, path.parent, password)
    write_private(path, yaml.safe_dump(dict(data), sort_keys=False))
    return config
