"""The commands behind `main.py --mode=...`: train, evaluate, predict, check, sweep.

The ConfigDict stops here: `main.py` checks the config once (`checks.check_config`, which returns the
typed specs it built: plan, streaming options, dataset, runs, sample spec) and the workdir (`workdir`);
each command takes those specs and calls the layers below with them (called without them, it checks first).
"""
