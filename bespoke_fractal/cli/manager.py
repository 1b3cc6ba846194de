"""``bespoke-fractal manager ...``: QCFractal compute managers on this machine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bespoke_fractal.cli.options import (
    F,
    directory_option,
    server_env_option,
    server_file_option,
    with_options,
)
from bespoke_fractal.cli.tables import console, managers_table

if TYPE_CHECKING:
    from bespoke_fractal.manager import LocalManagers, ManagerSettings
    from bespoke_fractal.manager.cluster import ClusterManager


# where the managers' server is: the embedded one in DIR, or a credentials file / QCPORTAL_* env
manager_server_options = with_options([directory_option(), server_file_option, server_env_option])


def config_option(help_text: str) -> Callable[[F], F]:
    """``--config FILE``: a scheduler manager config (manager_configs/*.yaml)."""
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), help=help_text
    )


@click.group("manager")
def group() -> None:
    """Run QCFractal compute managers (qcfractal-compute-manager) on this machine."""


def _managers(
    directory: Path, server_file: Path | None, server_env: bool, settings: ManagerSettings | None = None
) -> LocalManagers:
    """The local managers of the embedded server in ``directory``, or of the external server."""
    from bespoke_fractal.manager import LocalManagers
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import embedded_managers, external_connection

    connection = external_connection(server_file, server_env)
    if connection is None:
        return embedded_managers(EmbeddedServer(directory), settings)
    return LocalManagers(directory / "managers", connection, settings)


def _cluster_manager(
    ctx: click.Context, directory: Path, server_file: Path | None, server_env: bool, config_file: Path
) -> ClusterManager:
    """The manager of ``config_file``; its account is the config's unless one is named."""
    from bespoke_fractal.manager.cluster import ClusterManager
    from bespoke_fractal.server import EmbeddedServer
    from bespoke_fractal.session import external_connection

    connection = external_connection(server_file, server_env)
    explicit_directory = ctx.get_parameter_source("directory") is not click.core.ParameterSource.DEFAULT
    if connection is None and explicit_directory:
        connection = EmbeddedServer(directory).connection("compute")
    return ClusterManager(config_file, directory / "cluster-managers", connection)


@group.command("start")
@manager_server_options
@config_option(
    "Run one manager from a scheduler config (manager_configs/slurm.yaml, ...) in the "
    "background; its account is the config's own unless --server-file, --server-env or "
    "--directory (the embedded server's compute account) is given.",
)
@click.option(
    "--n-workers",
    type=int,
    default=1,
    show_default=True,
    help="QC calculations run at once (one manager process each).",
)
@click.option(
    "--cores-per-worker",
    type=int,
    default=1,
    show_default=True,
    help="Cores of each calculation; workers are pinned to their own cores.",
)
@click.option(
    "--memory-per-worker",
    type=float,
    default=2.0,
    show_default=True,
    help="Memory of each calculation in GiB (passed to qcengine).",
)
@click.option(
    "--compute-tag",
    "compute_tags",
    multiple=True,
    default=("*",),
    show_default=True,
    help="Only take tasks with these compute tags.",
)
@click.pass_context
def start(
    ctx: click.Context,
    directory: Path,
    server_file: Path | None,
    server_env: bool,
    config_file: Path | None,
    n_workers: int,
    cores_per_worker: int,
    memory_per_worker: float,
    compute_tags: tuple[str, ...],
) -> None:
    """Start compute managers for the embedded server (or an external one)."""
    from bespoke_fractal.manager import ManagerSettings

    if config_file is not None:
        status = _cluster_manager(ctx, directory, server_file, server_env, config_file).start()
        console.print(
            f"manager {status.name} from {status.config_file}: pid {status.pid}, log {status.log_file}"
        )
        return
    settings = ManagerSettings(
        n_workers=n_workers,
        cores_per_worker=cores_per_worker,
        memory_per_worker=memory_per_worker,
        compute_tags=list(compute_tags),
    )
    processes = _managers(directory, server_file, server_env, settings).start()
    for p in processes:
        console.print(f"manager {p.index}: pid {p.pid}, cores {p.cores or 'any'}, log {p.log_file}")


@group.command("stop")
@manager_server_options
@config_option("Stop the manager started from this config.")
def stop(directory: Path, server_file: Path | None, server_env: bool, config_file: Path | None) -> None:
    """Stop the managers; their unfinished tasks go back to the server."""
    if config_file is not None:
        from bespoke_fractal.manager.cluster import ClusterManager

        stopped = ClusterManager(config_file, directory / "cluster-managers", None).stop()
        console.print(f"stopped {int(stopped)} manager process(es)")
        return
    stopped = _managers(directory, server_file, server_env).stop()
    console.print(f"stopped {stopped} manager process(es)")


@group.command("status")
@manager_server_options
def status(directory: Path, server_file: Path | None, server_env: bool) -> None:
    """List the local manager processes and those started from configs."""
    from bespoke_fractal.manager.cluster import started_managers

    processes = _managers(directory, server_file, server_env).status()
    console.print(managers_table(processes, started_managers(directory / "cluster-managers")))
