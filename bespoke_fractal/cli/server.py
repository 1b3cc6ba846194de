"""``bespoke-fractal server ...``: run the embedded QCFractal server and manage its accounts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bespoke_fractal.cli.options import directory_option, server_env_option, server_file_option
from bespoke_fractal.cli.tables import console, users_table
from bespoke_fractal.server.accounts import USER_ROLES
from bespoke_fractal.server.connection import ServerConnection


@click.group("server")
def group() -> None:
    """Run the embedded QCFractal server (own PostgreSQL, 127.0.0.1, security on)."""


@group.command("start")
@directory_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=None, help="API port (default: a free port).")
def start(directory: Path, host: str, port: int | None) -> None:
    """Start the server, creating it on first use; records survive restarts."""
    from bespoke_fractal.server import EmbeddedServer, ServerSettings

    settings = ServerSettings(host=host, port=port) if (host != "127.0.0.1" or port) else None
    status = EmbeddedServer(directory, settings).start()
    console.print(f"QCFractal server running at {status.address} (directory {status.directory})")
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"Warning: listening on {host} without TLS: passwords cross the network in clear text "
            "unless a TLS proxy or SSH tunnel carries them (docs/hpc.md). Give each person and "
            "cluster its own account: bespoke-fractal server user add NAME --role submit|compute|read"
        )


@group.command("stop")
@directory_option()
def stop(directory: Path) -> None:
    """Stop the server and its PostgreSQL (stop local managers first)."""
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import embedded_managers

    server = EmbeddedServer(directory)
    if server.initialized:
        embedded_managers(server).stop()
    server.stop()
    console.print(f"stopped the server in {directory}")


@group.command("status")
@directory_option()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(directory: Path, as_json: bool) -> None:
    """Is the server running, and where."""
    from bespoke_fractal.server import EmbeddedServer

    current = EmbeddedServer(directory).status()
    if as_json:
        click.echo(current.model_dump_json(indent=2))
        return
    state = "running" if current.running else "stopped"
    console.print(
        f"server {state}; address {current.address or '-'}; PostgreSQL "
        f"{'running' if current.postgres_running else 'stopped'}; directory {current.directory}"
    )
    if not current.running:
        sys.exit(3)


@group.group("user")
def user() -> None:
    """Accounts on the server, one per person or cluster (an admin account is needed)."""


def _admin_connection(directory: Path, server_file: Path | None, server_env: bool) -> ServerConnection:
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import external_connection

    connection = external_connection(server_file, server_env)
    return connection if connection is not None else EmbeddedServer(directory).connection("admin")


@user.command("add")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(USER_ROLES),
    required=True,
    help="submit: coordinators; compute: compute managers; read: qcportal users.",
)
@directory_option()
@server_file_option
@server_env_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Credentials file to write (0600) [default: DIR/secrets/users/USERNAME.yaml].",
)
@click.option("--address", help="Server address to write in the file, as other machines reach it.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin, not generated.")
@click.option("--fullname", default="", help="Who the account is for.")
def user_add(
    username: str,
    role: str,
    directory: Path,
    server_file: Path | None,
    server_env: bool,
    output: Path | None,
    address: str | None,
    password_stdin: bool,
    fullname: str,
) -> None:
    """Create an account; its password goes to a 0600 credentials file, never to the terminal."""
    from bespoke_fractal.server.accounts import ROLE_PURPOSE, add_user

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    output = output or directory / "secrets" / "users" / f"{username}.yaml"
    admin = _admin_connection(directory, server_file, server_env)
    connection = add_user(admin, username, role, output, password, fullname, address)
    console.print(
        f"added {role} account {username!r} ({ROLE_PURPOSE[role]}) on {connection.address}; "
        f"credentials in {output}"
    )


@user.command("list")
@directory_option()
@server_file_option
@server_env_option
def user_list(directory: Path, server_file: Path | None, server_env: bool) -> None:
    """The server's accounts and their roles."""
    from bespoke_fractal.server.accounts import list_users

    console.print(users_table(list_users(_admin_connection(directory, server_file, server_env))))
