"""Which QC programs the compute managers connected to a server can run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from qcportal import PortalClient

# every torsion-drive task is a geomeTRIC optimisation driving the QC program
OPTIMIZER = "geometric"


class ManagerPrograms(BaseModel):
    """One active compute manager: its name, compute tags and programs (name -> versions)."""

    name: str
    compute_tags: list[str]
    programs: dict[str, list[str]]

    def takes(self, compute_tag: str) -> bool:
        return compute_tag in self.compute_tags or "*" in self.compute_tags


def active_managers(client: PortalClient, wait: float = 0.0) -> list[ManagerPrograms]:
    """The managers the server counts as active (heartbeat within its limit); with ``wait``,
    give managers that are still starting that many seconds to register."""
    deadline = time.monotonic() + wait
    while True:
        managers = [
            ManagerPrograms(name=m.name, compute_tags=list(m.compute_tags), programs=dict(m.programs))
            for m in client.query_managers(status="active")
        ]
        if managers or time.monotonic() >= deadline:
            return managers
        time.sleep(1.0)


def missing_program(
    managers: list[ManagerPrograms], program: str, compute_tag: str = "*", optimizer: str | None = OPTIMIZER
) -> str | None:
    """Why no connected manager can run tasks of ``program`` (None when one can)."""
    takers = [m for m in managers if m.takes(compute_tag)]
    if not takers:
        return (
            f"waiting for a compute manager: none taking tag '{compute_tag}' is connected "
            f"({len(managers)} active in all)"
        )
    needed = [p for p in (program, optimizer) if p]
    if any(all(p in m.programs for p in needed) for m in takers):
        return None
    have = sorted({p for m in takers for p in m.programs} - {"qcengine"})
    return (
        f"waiting for a compute manager with {' and '.join(needed)}: none of the {len(takers)} "
        f"connected has it (they have {', '.join(have) or 'no programs'})"
    )
