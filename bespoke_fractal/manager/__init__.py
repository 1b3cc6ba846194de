"""QCFractal compute managers started by this project."""

from bespoke_fractal.manager.local import LocalManagers, ManagerSettings

__all__ = ["LocalManagers", "ManagerSettings"]
