"""``python -m bespoke_fractal.executor``: the coordinator child process of BespokeExecutor."""

from bespoke_fractal.executor.service import main

main()
