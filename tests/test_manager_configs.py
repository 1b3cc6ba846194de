"""The compute-manager templates in manager_configs/ must be valid for qcfractalcompute as-is.

They are loaded with qcfractalcompute's own ``read_configuration`` (the function
``qcfractal-compute-manager --config`` uses), whose model rejects unknown keys, and turned into
Parsl executors with ``qcfractalcompute.executors.build_executor``. Building an executor only
constructs Python objects; jobs are submitted only when Parsl starts it, so no scheduler is
needed here (scheduler commands are faked and recorded to show that nothing is submitted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from pydantic import ValidationError
from qcfractalcompute.compute_manager import ComputeManager
from qcfractalcompute.config import FractalComputeConfig, read_configuration
from qcfractalcompute.executors import build_executor

CONFIG_DIR = Path(__file__).resolve().parents[1] / "manager_configs"
TEMPLATES = sorted(CONFIG_DIR.glob("*.yaml"))
TEMPLATE_IDS = [p.name for p in TEMPLATES]


@pytest.fixture(autouse=True)
def _no_qcf_environment(monkeypatch):
    """QCF_COMPUTE_* variables override file values; keep the caller's out of these tests."""
    for name in list(os.environ):
        if name.upper().startswith("QCF_COMPUTE_"):
            monkeypatch.delenv(name)


def _load(path: Path) -> FractalComputeConfig:
    return read_configuration([str(path)])


def test_templates_exist():
    assert {p.name for p in TEMPLATES} >= {"local.yaml", "slurm.yaml", "pbs.yaml", "lsf.yaml"}


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_template_validates(path):
    config = _load(path)
    assert config.cluster
    assert config.server.fractal_uri.startswith(("http://", "https://"))
    assert config.server.username and config.server.password
    assert config.server.api_token is None
    assert config.update_frequency > 0
    assert len(config.executors) >= 1


def test_executor_types_cover_all_schedulers():
    types = {ex.type for path in TEMPLATES for ex in _load(path).executors.values()}
    assert types >= {"local", "slurm", "torque", "lsf"}


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_every_executor_has_compute_tags(path):
    for label, executor in _load(path).executors.items():
        assert executor.compute_tags, f"{path.name}: executor {label!r} has no compute_tags"
        assert all(isinstance(tag, str) and tag for tag in executor.compute_tags)


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_environment_variables_override_credentials(path, monkeypatch):
    monkeypatch.setenv("QCF_COMPUTE_SERVER__USERNAME", "from-env-user")
    monkeypatch.setenv("QCF_COMPUTE_SERVER__PASSWORD", "from-env-password")
    server = _load(path).server
    assert (server.username, server.password) == ("from-env-user", "from-env-password")
    assert server.fractal_uri.startswith(("http://", "https://"))  # rest of the file still used


@pytest.mark.parametrize(
    "where",
    [(), ("server",), ("executors", None)],
    ids=["top-level", "server", "executor"],
)
@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_unknown_key_is_rejected(path, where, tmp_path):
    data = yaml.safe_load(path.read_text())

    # Control: an unmodified copy in tmp_path is accepted.
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data))
    _load(good)

    section = data
    for key in where:
        section = section[key if key is not None else next(iter(section))]
    section["not_a_real_option"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))

    with pytest.raises(ValidationError, match="not_a_real_option"):
        _load(bad)


SUBMIT_COMMANDS = ("sbatch", "qsub", "bsub")
SCHEDULER_COMMANDS = (*SUBMIT_COMMANDS, "sacct", "squeue", "scancel", "qstat", "qdel", "bjobs", "bkill")


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_build_executor_without_scheduler(path, monkeypatch, tmp_path):
    # No scheduler is installed here. Commands of that name first on PATH log their call and
    # fail as a missing command would (SlurmProvider.__init__ runs "sacct -X" once to choose
    # sacct or squeue), to show that building an executor submits nothing.
    log = tmp_path / "scheduler-calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in SCHEDULER_COMMANDS:
        command = bin_dir / name
        command.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 127\n')
        command.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    for label, cfg in _load(path).executors.items():
        executor = build_executor(label, cfg)
        assert executor.label == label
        capacity = ComputeManager._get_max_workers(executor)

        if cfg.type == "local":
            assert isinstance(executor, ThreadPoolExecutor)
            assert capacity == cfg.max_workers
            continue

        assert isinstance(executor, HighThroughputExecutor)
        provider = executor.provider
        assert provider.max_blocks == cfg.max_nodes
        assert provider.init_blocks == 0 and provider.min_blocks == 0  # no jobs until work
        assert provider.walltime == cfg.walltime
        # The manager claims as many tasks as it believes it has workers: that must match the
        # template's workers_per_node (the torque template needs max_workers_per_node for it).
        assert executor.workers_per_node == cfg.workers_per_node
        assert capacity == cfg.workers_per_node * cfg.max_nodes

    commands = log.read_text().splitlines() if log.exists() else []
    if any(cfg.type == "slurm" for cfg in _load(path).executors.values()):
        assert any(c.startswith("sacct") for c in commands)  # the logging commands were the ones run
    submitted = [c for c in commands if c.split()[0] in SUBMIT_COMMANDS]
    assert not submitted, f"building the executor submitted jobs: {submitted}"
