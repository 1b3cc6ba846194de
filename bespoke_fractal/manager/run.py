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

from qcfractalcompute.compute_manager import ComputeManager
from qcfractalcompute.config import read_configuration

from bespoke_fractal.manager import warm


class FreeSlotComputeManager(ComputeManager):
    """A ComputeManager whose claims never exceed its idle workers."""

    def __init__(self, config) -> None:
        super().__init__(config)
        claim = self.client.claim

        def claim_free_slots(programs, compute_tags, limit):
            max_workers = sum(
                self._get_max_workers(self.dflow_kernel.executors[label])
                for label in self.manager_config.executors
            )
            free = max_workers - self.n_total_active_tasks
            return claim(programs, compute_tags, min(limit, free)) if free > 0 else []

        self.client.claim = claim_free_slots


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

    def stop(signum, _frame) -> None:
        logging.info("received %s, returning unfinished tasks", signal.Signals(signum).name)
        manager.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    manager.start()


if __name__ == "__main__":
    main()
