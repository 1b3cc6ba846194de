"""The embedded server: security, credentials, status and external-connection handling."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import yaml

from bespoke_fractal.errors import CredentialsError, ServerError
from bespoke_fractal.server import ServerConnection


def _all_secrets(server) -> list[str]:
    data = yaml.safe_load(server.credentials_file.read_text())
    found = [data["database"]["password"], data["api_secret_key"], data["jwt_secret_key"]]
    found += [user["password"] for user in data["users"].values()]
    return found


def test_binds_loopback_with_security(embedded_server):
    status = embedded_server.status()
    assert status.running and status.postgres_running
    assert status.address.startswith("http://127.0.0.1:")
    config = yaml.safe_load(embedded_server.config_file.read_text())
    assert config["enable_security"] is True
    assert config["allow_unauthenticated_read"] is False
    assert config["api"]["host"] == "127.0.0.1"
    assert config["database"]["host"] == "127.0.0.1"
    assert config["service_frequency"] <= 2


def test_unauthenticated_client_is_refused(embedded_server):
    with pytest.raises(CredentialsError, match="refused access"):
        ServerConnection(address=embedded_server.address).client()


def test_wrong_password_is_refused(embedded_server):
    user = embedded_server.connection("submit").username
    wrong = ServerConnection(address=embedded_server.address, username=user, password="x" * 24)
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        wrong.client()


def test_right_password_is_accepted(embedded_server):
    assert embedded_server.connection("submit").client().list_datasets() is not None


def test_credentials_are_private_and_strong(embedded_server):
    assert stat.S_IMODE(embedded_server.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(embedded_server.secrets_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(embedded_server.config_file.stat().st_mode) == 0o600
    assert all(len(secret) >= 20 for secret in _all_secrets(embedded_server))


def test_no_secret_in_process_arguments_or_logs(embedded_server, managers):
    assert all(p.running for p in managers.status())
    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
    environments = subprocess.run(["ps", "eww", "-e"], capture_output=True, text=True).stdout
    logs = ""
    for path in embedded_server.directory.rglob("*.log"):
        try:
            logs += path.read_text(errors="replace")
        except PermissionError:
            continue
    for secret in _all_secrets(embedded_server):
        assert secret not in listing
        assert secret not in environments
        assert secret not in logs


def test_manager_config_files_are_private(managers):
    for config in managers.directory.glob("manager-*.yaml"):
        assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_unreachable_server_is_one_clear_error():
    with pytest.raises(ServerError, match="cannot reach a QCFractal server at http://127.0.0.1:9"):
        ServerConnection(address="http://127.0.0.1:9").client()


def test_connection_from_file_and_environment(tmp_path, embedded_server, monkeypatch):
    good = embedded_server.connection("read")
    path = tmp_path / "server.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "address": good.address,
                "username": good.username,
                "password": good.password.get_secret_value(),
            }
        )
    )
    os.chmod(path, 0o644)
    with pytest.raises(CredentialsError, match="chmod 600"):
        ServerConnection.from_file(path)
    os.chmod(path, 0o600)
    assert ServerConnection.from_file(path).client().list_datasets() is not None

    monkeypatch.setenv("QCPORTAL_ADDRESS", good.address)
    monkeypatch.setenv("QCPORTAL_USERNAME", good.username)
    monkeypatch.setenv("QCPORTAL_PASSWORD", good.password.get_secret_value())
    connection = ServerConnection.from_environment()
    assert connection.client().list_datasets() is not None
    assert good.password.get_secret_value() not in repr(connection)


@pytest.mark.parametrize(
    "content, message",
    [
        ("address: [unclosed", "cannot be read"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("address: http://x\nport: 3\n", "malformed"),
    ],
)
def test_malformed_credentials_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(CredentialsError, match=message):
        ServerConnection.from_file(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another account")
def test_directory_postgres_cannot_enter_keeps_data_outside(tmp_path_factory):
    import shutil
    import tempfile
    from pathlib import Path

    from bespoke_fractal.server import EmbeddedServer

    private = Path(tempfile.mkdtemp(prefix="bf-private-"))  # 0700, like root's home
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    server = EmbeddedServer(private / "executor")
    try:
        status = server.start()
        assert status.running and status.postgres_running
        link = private / "executor" / "postgres"
        assert link.is_symlink()
        assert str(link.resolve()).startswith("/var/lib/bespoke-fractal/")
        assert server.connection("submit").client().list_datasets() == []
    finally:
        server.stop()
        target = (private / "executor" / "postgres").resolve()
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
