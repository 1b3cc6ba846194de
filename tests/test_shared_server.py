"""One server shared by people: ``server user add`` accounts, and two coordinators with their
own submit accounts and directories that reuse each other's drives."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from helpers import one_error_line, run_cli
from qcportal import PortalRequestError

from bespoke_fractal.executor import BespokeExecutor, wait_until_complete
from bespoke_fractal.server import ServerConnection
from bespoke_fractal.workflow import BespokeWorkflowFactory

# a grid no other test drives, so that every drive here is new to the session's server
FACTORY = BespokeWorkflowFactory.from_preset("debug", **{"qc_spec.grid_spacing": 90})


@pytest.fixture(scope="module")
def accounts(embedded_server, tmp_path_factory) -> dict[str, Path]:
    """Credentials files of new accounts, made with the CLI as an administrator would."""
    directory = str(embedded_server.directory)
    made = {}
    for name, role in (("alice", "submit"), ("bob", "submit"), ("cluster-a", "compute"), ("viewer", "read")):
        result = run_cli("server", "user", "add", name, "--role", role, "--directory", directory)
        assert result.returncode == 0, result.stderr
        made[name] = embedded_server.directory / "secrets" / "users" / f"{name}.yaml"
        assert str(made[name]) in result.stdout
    chosen = tmp_path_factory.mktemp("chosen") / "carol.yaml"
    password = "a-password-carol-chose-herself-42"
    result = run_cli(
        "server", "user", "add", "carol", "--role", "submit", "--directory", directory,
        "--output", str(chosen), "--password-stdin", stdin=password + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert password not in result.stdout + result.stderr
    made["carol"] = chosen
    return made


def test_new_accounts_get_private_credentials_files_and_their_roles(accounts, embedded_server):
    for name, path in accounts.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        connection = ServerConnection.from_file(path)
        assert connection.username == name and connection.address == embedded_server.address
        assert len(connection.password.get_secret_value()) >= 20
        assert connection.client().get_user().username == name  # the login works
    listed = run_cli("server", "user", "list", "--directory", str(embedded_server.directory))
    assert listed.returncode == 0, listed.stderr
    for name, role in (("alice", "submit"), ("cluster-a", "compute"), ("viewer", "read")):
        assert any(name in line and role in line for line in listed.stdout.splitlines()), listed.stdout


def test_roles_limit_what_accounts_can_do(accounts):
    viewer = ServerConnection.from_file(accounts["viewer"]).client()
    compute = ServerConnection.from_file(accounts["cluster-a"]).client()
    for client in (viewer, compute):
        with pytest.raises(PortalRequestError):
            client.add_dataset("torsiondrive", f"not allowed for {client.username}")
    viewer.list_datasets()  # a read account reads


@pytest.mark.parametrize(
    "args, message",
    [
        (["alice", "--role", "submit"], "cannot add user 'alice'"),
        (["dave", "--role", "admin"], "Invalid value for '--role'"),
        (["bad name!", "--role", "read"], "invalid username"),
        (["erin", "--role", "read", "--password-stdin"], "at least 20 characters"),
    ],
    ids=["existing-user", "admin-role", "bad-username", "short-password"],
)
def test_bad_account_requests_get_one_line(accounts, embedded_server, args, message, tmp_path):
    output = ["--output", str(tmp_path / "out.yaml")]
    result = run_cli(
        "server",
        "user",
        "add",
        *args,
        "--directory",
        str(embedded_server.directory),
        *output,
        stdin="short\n",
    )
    assert message in one_error_line(result)
    assert not (tmp_path / "out.yaml").exists()


def test_existing_credentials_file_is_not_overwritten(accounts, embedded_server):
    before = accounts["alice"].read_text()
    result = run_cli(
        "server", "user", "add", "frank", "--role", "read", "--directory", str(embedded_server.directory),
        "--output", str(accounts["alice"]),
    )  # fmt: skip
    assert "exists" in one_error_line(result)
    assert accounts["alice"].read_text() == before


def test_two_coordinators_share_each_others_drives(accounts, managers, admin_client, traversable_directory):
    """Alice fits pentane, Bob hexane, at the same time, each with an own directory and submit
    account: the fragment torsion they share is driven once, and each gets a force field."""
    before = {r.id for r in admin_client.query_records(record_type="torsiondrive")}
    root = traversable_directory("bf-shared-")
    executors = {
        name: BespokeExecutor(
            n_qc_compute_workers=0,
            directory=root / name,
            fractal_server=accounts[name],
            poll_interval=0.5,
        )
        for name in ("alice", "bob")
    }
    for executor in executors.values():
        executor.__enter__()
    try:
        jobs = {
            "alice": executors["alice"].submit("CCCCC", FACTORY),
            "bob": executors["bob"].submit("CCCCCC", FACTORY),
        }
        outputs = {
            name: wait_until_complete(job, frequency=0.5, timeout=1200, directory=root / name)
            for name, job in jobs.items()
        }
    finally:
        for executor in executors.values():
            executor.__exit__(None, None, None)
    for output in outputs.values():
        assert output.status == "success", output.error
        assert output.offxml and "bf-" in output.offxml
    alice, bob = (set(outputs[n].qc.record_ids) for n in ("alice", "bob"))
    assert len(alice) == 1 and len(bob) == 2 and len(alice & bob) == 1  # the shared drive
    new = {r.id for r in admin_client.query_records(record_type="torsiondrive")} - before
    assert new == alice | bob  # 3 target torsions, 2 drives, each computed once
    for record in admin_client.get_records(sorted(new)):
        assert record.owner_user in ("alice", "bob")
    for name in executors:  # no embedded server was started beside either coordinator
        assert not (root / name / "server.json").exists()
