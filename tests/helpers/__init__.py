"""Test helpers (not part of the package): fake datasets in the real challenges' layouts (`helpers.fakes`), and
what the command-line tests compare (`helpers.cli`).

Tests import them as `from helpers.fakes import ...`: pytest puts tests/ on sys.path (rootdir conftest).
"""
