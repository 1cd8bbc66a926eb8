"""Test helpers (not part of the package): where the shared ground truth lives (`helpers.shared`), `main.py` run
as a user runs it and what the command-line tests compare (`helpers.cli`), fake datasets in the real challenges'
layouts (`helpers.fakes`), child processes with N devices or N jax.distributed processes
(`helpers.multidevice`, running the functions of `helpers.children`), a disk that fills up (`helpers.small_disk`).

Tests import them as `from helpers.cli import ...`: pytest puts tests/ on sys.path (rootdir conftest).
"""
