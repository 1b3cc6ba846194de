"""The compute-manager templates in manager_configs/ must be valid for qcfractalcompute as-is.

They are loaded with qcfractalcompute's own ``read_configuration`` (the function
``qcfractal-compute-manager --config`` uses), whose model rejects unknown keys, and turned into
Parsl executors with ``qcfractalcompute.executors.build_executor``. Building an executor only
constructs Python objects; jobs are submitted only when Parsl starts it, so no scheduler is
needed here (scheduler commands are faked and recorded to show that nothing is submitted).

The configs this project writes for its own managers go through the same model
(:mod:`bespoke_fractal.manager.config`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from pydantic import ValidationError
from qcfractalcompute.config import FractalComputeConfig, read_configuration
from qcfractalcompute.executors import build_executor

from bespoke_fractal.errors import ManagerError
from bespoke_fractal.manager import LocalManagers, ManagerSettings
from bespoke_fractal.manager.compute_internals import executor_capacity
from bespoke_fractal.manager.config import compute_config, write_compute_config
from bespoke_fractal.server.connection import ServerConnection

pytestmark = pytest.mark.fast  # the fast tier: pytest -m fast

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
        capacity = executor_capacity(executor)

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


def test_local_manager_config_is_what_qcfractalcompute_reads(tmp_path):
    connection = ServerConnection(address="http://127.0.0.1:7777", username="compute", password="secret")
    settings = ManagerSettings(n_workers=2, cores_per_worker=2, memory_per_worker=3.0, update_frequency=2)
    managers = LocalManagers(tmp_path / "managers", connection, settings)
    path = tmp_path / "manager-1.yaml"
    written = write_compute_config(path, managers._config(1))
    assert path.stat().st_mode & 0o777 == 0o600
    config = _load(path)
    assert config == written
    assert config.cluster == "bespoke-local-1" and config.update_frequency == 2
    assert config.update_frequency_jitter == 0.0
    assert (config.server.fractal_uri, config.server.username) == ("http://127.0.0.1:7777", "compute")
    assert config.server.password == "secret"  # local managers' configs are 0600 and hold it
    [(label, executor)] = config.executors.items()
    assert (label, executor.type, executor.max_workers) == ("local", "local", 1)
    assert (executor.cores_per_worker, executor.memory_per_worker) == (2, 3.0)
    assert executor.scratch_directory == str(tmp_path / "managers" / "scratch")
    assert config.parsl_run_dir == str(tmp_path / "managers" / "parsl" / "1")


@pytest.mark.parametrize("path", TEMPLATES, ids=TEMPLATE_IDS)
def test_shared_validation_reads_templates_as_qcfractalcompute_does(path):
    data = yaml.safe_load(path.read_text())
    assert compute_config(data, path.parent) == _load(path)
    assert compute_config(data, path.parent, password="given").server.password == "given"


def test_shared_validation_refuses_in_one_line(tmp_path):
    data = yaml.safe_load((CONFIG_DIR / "local.yaml").read_text())
    data["not_a_real_option"] = 1
    with pytest.raises(ManagerError, match=r"^manager config: not_a_real_option: Extra inputs") as info:
        compute_config(data, tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ManagerError):
        write_compute_config(tmp_path / "bad.yaml", data)
    assert not (tmp_path / "bad.yaml").exists()
