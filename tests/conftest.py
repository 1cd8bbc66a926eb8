"""Shared test fixtures: the parity folder of the original MagNet, sample images."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from magnet_jax.runtime import configure_allocator

# As the entry points do, before JAX allocates (tests/test_runtime.py checks the outputs are bit-identical).
configure_allocator()

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAGNET_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
SAMPLES = SHARED / "samples"


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
    sys.path.insert(0, str(parity_dir))
    from synth_weights import synth_state_dict as synth

    def build(name: str, salt: str = "") -> dict[str, np.ndarray]:
        manifest = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
        bn = dict(np.load(parity_dir / "bn_stats" / f"{name}.npz"))
        return synth(manifest, salt, bn)

    return build


def run_main(args: list[str], cwd: Path | None = None, timeout: int = 900):
    """`python main.py ARGS` in a subprocess, as a user runs it; returns the CompletedProcess."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The workdir of one `configs/synthetic.py:smoke` run (the main job's whole path, tiny), shared by the
    smoke, sweep and notebook tests so that CI trains once."""
    workdir = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_main(["--config", str(REPO / "configs" / "synthetic.py") + ":smoke", "--workdir", str(workdir)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    (workdir / "stdout.txt").write_text(proc.stdout)
    return workdir
