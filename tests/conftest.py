"""Shared test fixtures: the parity folder of the original MagNet, sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.cli import run_main
from helpers.shared import PARITY, REPO, SAMPLES, SHARED, synth_state_dict_builder

from magnet_jax.allocator import configure_allocator

# As the entry points do, before JAX allocates (tests/test_allocator.py checks the outputs are bit-identical).
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


def pytest_collection_modifyitems(config, items) -> None:
    # stable: the slow tests keep their order, after every other test (a quick failure shows first)
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)
