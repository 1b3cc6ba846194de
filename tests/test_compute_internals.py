"""The qcfractalcompute internals of bespoke_fractal.manager.compute_internals are as used.

Fails on a qcfractalcompute upgrade, naming the version or the internal that changed: the
managers' free-slot claims and task shim rely on them.
"""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace

import pytest

from bespoke_fractal.manager import compute_internals
from bespoke_fractal.manager.compute_internals import INTERNALS, Internal, problem

pytestmark = pytest.mark.fast


def test_installed_version_is_the_one_written_against():
    installed = version("qcfractalcompute")
    assert installed == compute_internals.QCFRACTALCOMPUTE_VERSION, (
        f"qcfractalcompute {installed} is installed; bespoke_fractal/manager/compute_internals.py "
        f"was written against {compute_internals.QCFRACTALCOMPUTE_VERSION}: check every internal "
        "it lists, then update QCFRACTALCOMPUTE_VERSION"
    )


@pytest.mark.parametrize("internal", INTERNALS, ids=[internal.label for internal in INTERNALS])
def test_internal_is_as_used(internal: Internal):
    assert problem(internal) is None, problem(internal)


def test_a_changed_internal_is_named():
    manager = "qcfractalcompute.compute_manager:ComputeManager"
    assert "ComputeManager.gone is gone" in problem(Internal(f"{manager}.gone", "property"))
    assert "takes ('executor',)" in problem(Internal(f"{manager}._get_max_workers", "callable", ("x",)))
    assert "ComputeManager.not_set is no longer set" in problem(Internal(manager, "assigned", ("not_set",)))


def test_task_script_is_installed():
    path = compute_internals.task_script()
    assert path.name == compute_internals.TASK_SCRIPT and path.is_file()


class _Executor:
    def __init__(self, workers: int) -> None:
        self.workers = workers


def test_claims_only_free_slots(monkeypatch):
    monkeypatch.setattr(compute_internals, "executor_capacity", lambda executor: executor.workers)
    claims: list[int] = []

    def claim(programs: dict, compute_tags: list[str], limit: int) -> list[int]:
        claims.append(limit)
        return list(range(limit))

    manager = SimpleNamespace(
        client=SimpleNamespace(claim=claim),
        dflow_kernel=SimpleNamespace(
            executors={"a": _Executor(2), "b": _Executor(1), "_parsl_internal": None}
        ),
        manager_config=SimpleNamespace(executors={"a": {}, "b": {}}),
        n_total_active_tasks=1,
    )
    compute_internals.claim_only_free_slots(manager)
    assert manager.client.claim({}, ["*"], 9) == [0, 1]  # 3 workers, 1 busy
    manager.n_total_active_tasks = 3
    assert manager.client.claim({}, ["*"], 9) == []
    assert claims == [2]
