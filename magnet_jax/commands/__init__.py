"""The commands behind `main.py --mode=...`: train, evaluate, predict, check, sweep.

The ConfigDict stops here: each command checks the config (`checks.check_config`) and the workdir
(`workdir`), then calls the layers below with typed arguments.
"""
