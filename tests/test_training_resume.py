"""Checkpoint / resume of real training runs on a tiny synthetic dataset.

- N steps straight == N/2 steps, restart, N/2 steps (backbone and refiner: parameters, BatchNorm
  statistics, optimizer state and the data iterator position are all restored).
- A training process killed with SIGKILL resumes from its last complete checkpoint and ends with
  the same weights as an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = REPO / "tests" / "configs" / "tiny.py"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic") / "data"


def _config(root: Path, **train):
    from magnet_jax.config import load_config_file

    c = load_config_file(TINY_CONFIG)
    c.data.root = str(root)
    for key, value in train.items():
        c.train[key] = value
    return c


def _weights(path: Path, name: str) -> list[np.ndarray]:
    from flax import nnx

    from magnet_jax.weights import load_model_weights

    model = load_model_weights(str(path), name, 5)
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))]


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_straight_equals_half_restart_half(tmp_path, data_root):
    from magnet_jax.commands.train import run_train

    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train(_config(data_root), str(straight))  # 4 epochs x 2 steps
    run_train(_config(data_root, max_steps=4), str(split))
    run_train(_config(data_root), str(split))
    _assert_same(
        _weights(straight / "weights" / "backbone", "small"), _weights(split / "weights" / "backbone", "small")
    )

    # the refiner on that backbone (OHEM loss, frozen backbone inside the step)
    backbone = str(straight / "weights" / "backbone")
    ref = dict(target="refiner", epochs=2)
    run_train(_config(data_root, **ref), str(straight))
    c = _config(data_root, max_steps=2, **ref)
    c.checkpoint.backbone = backbone
    run_train(c, str(split))
    c = _config(data_root, **ref)
    c.checkpoint.backbone = backbone
    run_train(c, str(split))
    _assert_same(
        _weights(straight / "weights" / "refiner", "refinement"), _weights(split / "weights" / "refiner", "refinement")
    )
    metrics = (split / "metrics.jsonl").read_text()
    assert '"run": "refiner"' in metrics and '"iou_aggre"' in metrics
    assert (split / "config.json").is_file()
    assert list((split / "tensorboard" / "refiner").glob("events.out.tfevents.*"))


def _committed(ckpt_dir: Path) -> list[int]:
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


@pytest.mark.slow
def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path, data_root):
    from magnet_jax.commands.train import run_train

    workdir = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(REPO / "main.py"), f"--config={TINY_CONFIG}", f"--workdir={workdir}",
           f"--config.data.root={data_root}", "--config.train.epochs=500"]  # fmt: skip
    ckpt_dir = workdir / "checkpoints" / "backbone"
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not [s for s in _committed(ckpt_dir) if s >= 4]:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    steps = _committed(ckpt_dir)
    assert steps and steps[-1] >= 4
    last = steps[-1]
    target = last + 3  # resume, then stop at a step that is not a checkpoint step

    rerun = subprocess.run(cmd + [f"--config.train.max_steps={target}"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from step {last}" in rerun.stderr
    assert _committed(ckpt_dir)[-1] == target
    assert not [p for p in ckpt_dir.iterdir() if "tmp" in p.name], "a partial checkpoint was left behind"

    straight = tmp_path / "straight"
    run_train(_config(data_root, epochs=500, max_steps=target), str(straight))
    _assert_same(
        _weights(straight / "weights" / "backbone", "small"), _weights(workdir / "weights" / "backbone", "small")
    )
