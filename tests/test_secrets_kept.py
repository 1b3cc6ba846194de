"""Accounts do only what their role allows, and no password leaks into what users and logs see.

Runs after the executor tests (file order), so the session directory holds a job store, fits,
results and logs of real jobs, and the coordinator, managers and server have all been running.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import run_cli
from qcportal import PortalClient

from bespoke_fractal.executor import BespokeExecutor, JobStore, wait_until_complete
from bespoke_fractal.executor.output import write_job_output
from bespoke_fractal.workflow import BespokeWorkflowFactory

# files that hold secrets on purpose: each is 0600 (checked in test_server.py)
SECRET_HOLDERS = ("secrets/credentials.yaml", "qcfractal/qcfractal_config.yaml")


def secrets_of(directory: Path) -> list[str]:
    data = yaml.safe_load((directory / "secrets" / "credentials.yaml").read_text())
    found = [data["database"]["password"], data["api_secret_key"], data["jwt_secret_key"]]
    found += [account["password"] for account in data["users"].values()]
    assert all(len(secret) >= 20 for secret in found)
    return found


def file_text(path) -> str:
    """A file's text. SQLite files are read by another process: closing a descriptor of a
    database file drops every POSIX lock this process holds on it (sessions' open job stores
    included), after which another process may delete the WAL under them."""
    if path.name.startswith("jobs.sqlite"):
        data = subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout
    else:
        data = path.read_bytes()
    return data.decode(errors="replace")


def test_compute_account_cannot_create_datasets(embedded_server):
    client = embedded_server.connection("compute").client()
    with pytest.raises(Exception, match="(?i)forbidden|permission|not authorized|denied"):
        client.add_dataset("torsiondrive", "made-by-compute")


def test_submit_account_cannot_administer(embedded_server):
    client = embedded_server.connection("submit").client()
    with pytest.raises(Exception, match="(?i)forbidden|permission|not authorized|denied"):
        client.list_users()


def test_anonymous_client_reads_nothing(embedded_server):
    with pytest.raises(Exception, match="(?i)login|authori|forbidden|401|403"):
        anonymous = PortalClient(embedded_server.address, show_motd=False)
        anonymous.query_records()  # if the client could be made at all


def test_no_password_in_arguments_logs_store_results_or_errors(embedded_server, managers, tmp_path):
    directory = embedded_server.directory
    secrets = secrets_of(directory)
    # a job's results written where users keep them, and an error message with a wrong password
    factory = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 60})
    with BespokeExecutor(n_qc_compute_workers=0, directory=directory, poll_interval=0.5) as executor:
        wait_until_complete(executor.submit("CCCCC", factory), frequency=0.5, timeout=900)
        outputs = executor.list()
        for output in outputs[:3]:
            write_job_output(output, tmp_path / "results" / f"job-{output.id}")
        arguments = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        environments = subprocess.run(["ps", "eww", "-A"], capture_output=True, text=True).stdout
    assert outputs, "the executor tests left no jobs to look at"
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        f"address: {embedded_server.address}\nusername: bespoke-submit\npassword: {secrets[3][::-1]}\n"
    )
    os.chmod(wrong, 0o600)
    refused = run_cli(
        "executor", "launch", "--directory", str(tmp_path / "x"), "--fractal-credentials", str(wrong),
        timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "rejected the credentials" in refused.stderr

    texts = {"process arguments": arguments, "process environments": environments}
    texts["error message"] = refused.stdout + refused.stderr
    store = JobStore.in_directory(directory)
    texts["job store"] = "".join(o.model_dump_json() for o in store.outputs())
    for path in [*directory.rglob("*"), *(tmp_path / "results").rglob("*"), *(tmp_path / "x").rglob("*")]:
        relative = path.relative_to(directory).as_posix() if path.is_relative_to(directory) else path.name
        if not path.is_file() or relative in SECRET_HOLDERS or relative.startswith("postgres/"):
            continue  # the database itself is PostgreSQL's, in its account's 0700 directory
        if re.fullmatch(r"([\w-]+/)*[\w-]*managers/manager-\d+\.yaml", relative):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
            continue  # a manager's configuration holds the compute password, 0600
        texts[str(path)] = file_text(path)
    assert any(name.endswith("executor.log") for name in texts) and any(
        name.endswith(".offxml") for name in texts
    )
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a password is in {name}"
        assert secrets[3][::-1] not in text, f"the wrong password is in {name}"
