"""How to reach a QCFractal server: address plus credentials from a file or the environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from bespoke_fractal.errors import CredentialsError, ServerError

if TYPE_CHECKING:
    from qcportal import PortalClient

ENV_PREFIX = "QCPORTAL_"


class ServerConnection(BaseModel):
    """A QCFractal server address and the account to use on it (the password is never shown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    username: str | None = None
    password: SecretStr | None = None
    verify: bool = True

    @classmethod
    def from_file(cls, path: str | Path, address: str | None = None) -> ServerConnection:
        """Read ``address``/``username``/``password``/``verify`` from a YAML or JSON file
        (``address`` given here replaces the file's).

        The file must not be readable by group or others when it holds a password.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise CredentialsError(f"credentials file {path} does not exist") from None
        except (OSError, yaml.YAMLError) as exc:
            raise CredentialsError(f"credentials file {path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise CredentialsError(f"credentials file {path} must hold a mapping with 'address'")
        if data.get("password") and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialsError(
                f"credentials file {path} holds a password but is readable by others: chmod 600 it"
            )
        if address:
            data["address"] = address
        try:
            return cls(**data)
        except ValidationError as exc:
            fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
            raise CredentialsError(f"credentials file {path} is malformed ({fields})") from None

    @classmethod
    def from_environment(cls, prefix: str = ENV_PREFIX, address: str | None = None) -> ServerConnection:
        """Read ``QCPORTAL_ADDRESS`` (unless ``address`` is given), ``QCPORTAL_USERNAME``,
        ``QCPORTAL_PASSWORD``, ``QCPORTAL_VERIFY``."""
        address = address or os.environ.get(f"{prefix}ADDRESS")
        if not address:
            raise CredentialsError(f"{prefix}ADDRESS is not set")
        verify = os.environ.get(f"{prefix}VERIFY", "true").strip().lower() not in {
            "0",
            "false",
            "no",
        }
        return cls(
            address=address,
            username=os.environ.get(f"{prefix}USERNAME") or None,
            password=os.environ.get(f"{prefix}PASSWORD") or None,
            verify=verify,
        )

    def check_reachable(self, timeout: float = 10.0) -> None:
        """Raise ServerError at once when nothing answers at the address."""
        import requests

        url = f"{self.address.rstrip('/')}/api/v1/information"
        try:
            requests.get(url, timeout=timeout, verify=self.verify)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            if isinstance(exc, requests.ConnectionError):
                reason = "connection refused or host unreachable"
            elif isinstance(exc, requests.Timeout):
                reason = f"no answer within {timeout:.0f} s"
            raise ServerError(f"cannot reach a QCFractal server at {self.address}: {reason}") from None

    def client(self) -> PortalClient:
        """A logged-in qcportal client; one clear line if the server is unreachable or refuses."""
        from qcportal import PortalClient
        from qcportal.exceptions import AuthenticationFailure

        self.check_reachable()
        password = self.password.get_secret_value() if self.password else None
        try:
            return PortalClient(
                self.address,
                username=self.username,
                password=password,
                verify=self.verify,
                show_motd=False,
            )
        except AuthenticationFailure:
            raise CredentialsError(
                f"the server at {self.address} rejected the credentials of user '{self.username}'"
            ) from None
        except Exception as exc:  # connection errors come in many types from requests/qcportal
            text = str(exc).replace(password or "\0", "***")
            if "401" in text or "authenticat" in text.lower() or "login" in text.lower():
                raise CredentialsError(
                    f"the server at {self.address} refused access for user "
                    f"'{self.username or 'anonymous'}': {text.splitlines()[0]}"
                ) from None
            raise ServerError(
                f"cannot reach a QCFractal server at {self.address}: {text.splitlines()[0]}"
            ) from None
