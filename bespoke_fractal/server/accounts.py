"""User accounts on a QCFractal server, for sharing one server between people and clusters.

Passwords never pass through a command line: a new account gets a generated password (or one
read from stdin) and its connection details are written to a 0600 credentials file that
``--fractal-credentials`` / ``--server-file`` and ``ServerConnection.from_file`` read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from bespoke_fractal.errors import CredentialsError
from bespoke_fractal.server.connection import ServerConnection

UserRole = Literal["submit", "compute", "read"]
USER_ROLES: tuple[UserRole, ...] = ("submit", "compute", "read")
ROLE_PURPOSE: dict[str, str] = {
    "submit": "coordinators: create datasets and submit torsion drives, read results",
    "compute": "compute managers: claim tasks and return results, nothing else",
    "read": "read records and datasets (qcportal users, plots, audits)",
}
MIN_PASSWORD_LENGTH = 20


class Account(BaseModel):
    """One account as the server reports it (no password)."""

    username: str
    role: str
    enabled: bool
    fullname: str = ""


def write_credentials(path: Path, connection: ServerConnection) -> Path:
    """Write ``connection`` (password included) to ``path``, created 0600; refuse to overwrite."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "address": connection.address,
        "username": connection.username,
        "password": connection.password.get_secret_value() if connection.password else None,
        "verify": connection.verify,
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CredentialsError(f"{path} exists: choose another --output or remove it") from None
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle)
    return path


def add_user(
    admin: ServerConnection,
    username: str,
    role: UserRole,
    output: Path,
    password: str | None = None,
    fullname: str = "",
    address: str | None = None,
) -> ServerConnection:
    """Create ``username`` with ``role`` on the server ``admin`` reaches; write its credentials
    (``address`` overrides the admin's address, e.g. the one other machines use) to ``output``."""
    from qcportal import PortalRequestError
    from qcportal.auth import UserInfo

    if role not in USER_ROLES:
        raise CredentialsError(f"role must be one of {', '.join(USER_ROLES)}, not {role!r}")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise CredentialsError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    output = Path(output)
    if output.exists():
        raise CredentialsError(f"{output} exists: choose another --output or remove it")
    client = admin.client()
    try:
        info = UserInfo(username=username, role=role, enabled=True, fullname=fullname)
    except ValueError as exc:
        raise CredentialsError(f"invalid username {username!r}: {_reason(exc)}") from None
    try:
        generated = client.add_user(info, password)
    except PortalRequestError as exc:
        raise CredentialsError(f"cannot add user {username!r}: {_reason(exc)}") from None
    connection = ServerConnection(
        address=address or admin.address, username=username, password=generated, verify=admin.verify
    )
    write_credentials(output, connection)
    return connection


def list_users(admin: ServerConnection) -> list[Account]:
    """Every account on the server (needs an admin account)."""
    from qcportal import PortalRequestError

    try:
        users = admin.client().list_users()
    except PortalRequestError as exc:
        raise CredentialsError(f"cannot list users: {_reason(exc)}") from None
    return [
        Account(username=u.username, role=u.role, enabled=u.enabled, fullname=u.fullname or "") for u in users
    ]


def _reason(exc: Exception) -> str:
    text = getattr(exc, "details", None) or str(exc)
    if isinstance(text, dict):
        text = text.get("msg") or str(text)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
