"""The qcfractalcompute internals of bespoke_fractal.manager.compute_internals are as used.

Fails on a qcfractalcompute upgrade, naming the version or the internal that changed: the
managers' free-slot claims and task shim rely on them.
"""

from __future__ import annotations

from importlib.metadata import version

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
