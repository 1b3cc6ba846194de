"""The QCFractal server: the embedded one this project runs, or an external one it connects to."""

from bespoke_fractal.server.connection import ServerConnection
from bespoke_fractal.server.embedded import EmbeddedServer, ServerSettings, ServerStatus

__all__ = ["EmbeddedServer", "ServerConnection", "ServerSettings", "ServerStatus"]
