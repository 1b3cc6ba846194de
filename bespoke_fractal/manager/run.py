"""Entry point of one compute-manager process: qcfractalcompute's ComputeManager, claiming only
as many tasks as it has free workers.

QCFractal's manager claims up to three times its worker count. With one worker per manager
process (so that each process can be pinned to its own cores) that would let one manager hold
tasks that an idle neighbour could run; claiming only free slots leaves them on the server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from qcfractalcompute.compute_manager import ComputeManager
from qcfractalcompute.config import FractalComputeConfig, read_configuration

from bespoke_fractal.manager import warm
from bespoke_fractal.manager.compute_internals import claim_only_free_slots


class FreeSlotComputeManager(ComputeManager):
    """A ComputeManager whose claims never exceed its idle workers."""

    def __init__(self, config: FractalComputeConfig) -> None:
        super().__init__(config)
        claim_only_free_slots(self)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="bespoke-fractal compute manager process")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level="INFO",
        stream=sys.stdout,
        format="[%(asctime)s] %(levelname)8s: %(name)s: %(message)s",
    )
    config = read_configuration([args.config])
    logging.getLogger().setLevel(config.loglevel)
    warm.start_beside(Path(args.config))  # before the manager, whose tasks inherit its address
    manager = FreeSlotComputeManager(config)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.info("received %s, returning unfinished tasks", signal.Signals(signum).name)
        manager.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    manager.start()


if __name__ == "__main__":
    main()
