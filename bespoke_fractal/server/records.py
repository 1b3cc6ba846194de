"""Reading QCFractal records the same way everywhere."""

from __future__ import annotations

from typing import Any

# a record in one of these will not change again without a reset
FINISHED = {"complete", "error", "cancelled", "invalid", "deleted"}


def record_status(record: Any) -> str:
    """A record's status as a plain lower-case string (qcportal gives an enum)."""
    return str(getattr(record.status, "value", record.status))
