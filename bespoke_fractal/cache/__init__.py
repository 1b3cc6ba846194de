"""Cache import/export: bring completed torsion drives from another QCFractal server or a file.

QCFractal has no call that inserts completed records made elsewhere, so an import submits each
drive to the destination as usual and answers its optimisation tasks from the source's results
with an in-process *replay* compute manager (:mod:`bespoke_fractal.cache.replay`).
"""

from bespoke_fractal.cache.archive import (
    ArchivedDrive,
    ArchivedOptimization,
    CacheError,
    DriveArchive,
    DriveSpecification,
    read_archive,
    write_archive,
)
from bespoke_fractal.cache.importer import ImportReport, import_drives
from bespoke_fractal.cache.source import SourceSelection, read_server_drives

__all__ = [
    "ArchivedDrive",
    "ArchivedOptimization",
    "CacheError",
    "DriveArchive",
    "DriveSpecification",
    "ImportReport",
    "SourceSelection",
    "import_drives",
    "read_archive",
    "read_server_drives",
    "write_archive",
]
