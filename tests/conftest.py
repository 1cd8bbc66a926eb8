"""Shared test fixtures: the parity folder of the original MagNet, sample images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_main
from helpers.shared import PARITY, REPO, SAMPLES, SHARED, synth_state_dict_builder

from magnet_jax.runtime import configure_allocator

# As the entry points do, before JAX allocates (tests/test_runtime.py checks the outputs are bit-identical).
configure_allocator("bounded")  # many different workloads in one process: a bounded heap

__all__ = ["PARITY", "REPO", "SAMPLES", "SHARED", "run_main"]  # the tests' paths and runner live in helpers/


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        pytest.skip(f"parity fixtures of the original MagNet not found at {PARITY} (set MAGNET_SHARED)")
    return PARITY


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"sample images not found at {SAMPLES} (set MAGNET_SHARED)")
    return SAMPLES


@pytest.fixture(scope="session")
def ops_npz(parity_dir):
    return dict(np.load(parity_dir / "ops.npz"))


@pytest.fixture(scope="session")
def synth_state_dict(parity_dir):
    """synth_state_dict(manifest_name, salt='') -> {torch key: array} of the original's weights."""
    return synth_state_dict_builder(parity_dir)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The workdir of one `configs/synthetic.py:smoke` run (the main job's whole path, tiny), shared by the
    smoke, sweep and notebook tests so that CI trains once."""
    workdir = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_main(["--config", str(REPO / "configs" / "synthetic.py") + ":smoke", "--workdir", str(workdir)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    (workdir / "stdout.txt").write_text(proc.stdout)
    return workdir


# ----------------------------------------------------------------------------- the slow-test budget
# `MAGNET_TEST_BUDGET_S=N` (what .ci/run sets): tests marked `slow` run after all the others, and each one
# starts only while fewer than N - SLOW_TEST_MAX_S seconds have passed since the session began; the rest are
# skipped, naming the budget. Unset, every test runs. `pytest -m slow` runs only the slow ones.
BUDGET_ENV = "MAGNET_TEST_BUDGET_S"
SLOW_TEST_MAX_S = 130.0  # the longest slow test on a 2-core CPU under -n 2 (the two-process training test)
_SESSION_START = [0.0]


def _budget_s() -> float | None:
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise pytest.UsageError(f"{BUDGET_ENV}={raw!r}: expected a number of seconds") from None


def pytest_sessionstart(session) -> None:
    import time

    _budget_s()  # a bad value is an error before any test runs
    _SESSION_START[0] = time.monotonic()


def pytest_collection_modifyitems(config, items) -> None:
    # stable: the slow tests keep their order, after every other test
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


def pytest_runtest_setup(item) -> None:
    import time

    budget = _budget_s()
    if budget is None or item.get_closest_marker("slow") is None:
        return
    spent = time.monotonic() - _SESSION_START[0]
    if spent > budget - SLOW_TEST_MAX_S:
        pytest.skip(f"slow test not started: {spent:.0f} s of the {budget:.0f} s {BUDGET_ENV} spent (pytest -m slow)")
