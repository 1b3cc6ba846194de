"""Every qcfractalcompute internal this project relies on, and nothing else.

qcfractalcompute's documented interface is its CLI and its config models
(:mod:`qcfractalcompute.config`, used by :mod:`bespoke_fractal.manager.config`). The managers
started by this project also use undocumented parts: the manager's worker count, its active
tasks and its claim call (claims limited to free workers, :func:`claim_only_free_slots`), how
it starts a QC task (``python3`` from PATH running its ``qcengine_compute.py``, which the task
shim of :func:`bespoke_fractal.manager.local.write_task_bin` intercepts), and the variable that
carries a cluster manager's password (:data:`PASSWORD_ENV`).

Written against qcfractalcompute :data:`QCFRACTALCOMPUTE_VERSION`. :data:`INTERNALS` lists each
internal with what is used of it; ``tests/test_compute_internals.py`` checks the installed
version and every entry (:func:`problem`), so an upgrade fails there, naming the internal.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from parsl.executors.base import ParslExecutor
    from qcfractalcompute.compute_manager import ComputeManager

QCFRACTALCOMPUTE_VERSION = "0.71"
TASK_SCRIPT = "qcengine_compute.py"
"""qcfractalcompute's QC task script, run as ``python3 .../run_scripts/qcengine_compute.py INPUT``."""
PASSWORD_ENV = "QCF_COMPUTE_SERVER__PASSWORD"
"""The variable that gives a manager its server password (its config's ``server.password``)."""


class Internal(NamedTuple):
    """One internal: ``module:qualified.name``, what kind of thing it must be, and what is used."""

    where: str
    kind: Literal["callable", "staticmethod", "property", "assigned", "source"]
    expected: tuple[str, ...] = ()
    """Parameter names (callable, staticmethod), the instance attribute its source assigns
    (assigned), or text its source must hold (source)."""

    @property
    def label(self) -> str:
        """The internal as messages and test ids name it."""
        return f"{self.where}.{self.expected[0]}" if self.kind == "assigned" else self.where


_MANAGER = "qcfractalcompute.compute_manager:ComputeManager"
INTERNALS: tuple[Internal, ...] = (
    Internal(f"{_MANAGER}.__init__", "callable", ("self", "config")),
    Internal(f"{_MANAGER}._get_max_workers", "staticmethod", ("executor",)),
    Internal(f"{_MANAGER}.n_total_active_tasks", "property"),
    Internal(_MANAGER, "assigned", ("client",)),
    Internal(_MANAGER, "assigned", ("manager_config",)),
    Internal(_MANAGER, "assigned", ("dflow_kernel",)),
    Internal(f"{_MANAGER}._update", "source", ("self.client.claim(",)),
    Internal("parsl.dataflow.dflow:DataFlowKernel", "assigned", ("executors",)),
    Internal(
        "qcportal.manager_client:ManagerClient.claim", "callable", ("self", "programs", "tags", "limit")
    ),
    Internal("qcfractalcompute.run_scripts:get_script_path", "callable", ("name",)),
    Internal(
        "qcfractalcompute.config:FractalComputeConfig",
        "source",
        ('env_prefix="QCF_COMPUTE_"', 'env_nested_delimiter="__"'),
    ),
    Internal(
        "qcfractalcompute.apps.qcengine:qcengine_conda_app",
        "source",
        (f'get_script_path("{TASK_SCRIPT}")', '["python3", script_path'),
    ),
)


def _resolve(where: str) -> Any:
    module_name, _, qualified = where.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in filter(None, qualified.split(".")):
        target = getattr(target, part)
    return target


def problem(internal: Internal) -> str | None:
    """What is not as this project uses it, naming the internal; None when all is."""
    try:
        target = _resolve(internal.where)
    except (ImportError, AttributeError) as exc:
        return f"{internal.where} is gone: {exc}"
    if internal.kind in ("callable", "staticmethod"):
        if internal.kind == "staticmethod":
            owner_name, _, name = internal.where.rpartition(".")
            if not isinstance(inspect.getattr_static(_resolve(owner_name), name), staticmethod):
                return f"{internal.where} is no longer a staticmethod"
        if not callable(target):
            return f"{internal.where} is no longer callable"
        names = tuple(inspect.signature(target).parameters)
        if names != internal.expected:
            return f"{internal.where} takes {names}, this project passes {internal.expected}"
        return None
    if internal.kind == "property":
        owner_name, _, name = internal.where.rpartition(".")
        if not isinstance(inspect.getattr_static(_resolve(owner_name), name), property):
            return f"{internal.where} is no longer a property"
        return None
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError) as exc:
        return f"{internal.where} has no readable source: {exc}"
    if internal.kind == "assigned":
        attribute = internal.expected[0]
        if not re.search(rf"\bself\.{attribute}\s*[:=]", source):
            return f"{internal.label} is no longer set by {internal.where}"
        return None
    missing = [text for text in internal.expected if text not in source]
    if missing:
        return f"{internal.where} no longer has {', '.join(repr(text) for text in missing)}"
    return None


def executor_capacity(executor: ParslExecutor) -> int:
    """Tasks a Parsl executor runs at once, counted as qcfractalcompute counts them."""
    from qcfractalcompute.compute_manager import ComputeManager

    return ComputeManager._get_max_workers(executor)


def worker_count(manager: ComputeManager) -> int:
    """Tasks all executors of a started manager run at once."""
    executors = manager.dflow_kernel.executors
    return sum(executor_capacity(executors[label]) for label in manager.manager_config.executors)


def claim_only_free_slots(manager: ComputeManager) -> None:
    """Make ``manager`` claim no more tasks than it has idle workers (qcfractalcompute claims up
    to three times its worker count)."""
    claim: Callable[[Any, list[str], int], list] = manager.client.claim

    def claim_free_slots(programs: Any, compute_tags: list[str], limit: int) -> list:
        free = worker_count(manager) - manager.n_total_active_tasks
        return claim(programs, compute_tags, min(limit, free)) if free > 0 else []

    manager.client.claim = claim_free_slots


def task_script() -> Path:
    """Where qcfractalcompute's QC task script is installed."""
    from qcfractalcompute.run_scripts import get_script_path

    return Path(get_script_path(TASK_SCRIPT))
