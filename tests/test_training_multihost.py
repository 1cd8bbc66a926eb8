"""Multi-process ("several hosts") training on one machine: two CPU processes joined by
`jax.distributed` (launched through the `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
`JAX_PROCESS_ID` variables that `magnet_jax.sharding.maybe_initialize_distributed` reads).

- A training step over the global mesh of 2 processes x 2 devices, each process feeding its half of
  the batch, gives the loss and parameters of the same step on one device.
- `main.py` trains in two processes (per-process data shards, one orbax checkpoint directory, the
  weights exported by process 0) and a rerun of the same two commands resumes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STEP_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    from magnet_jax.sharding import maybe_initialize_distributed
    assert maybe_initialize_distributed()
    import numpy as np
    from magnet_jax.models import build_model
    from magnet_jax.training.backbone_step import make_backbone_step
    from magnet_jax.sharding import make_mesh, replicate, shard_batch, to_host
    from magnet_jax.training.optim import sgd_coupled
    from magnet_jax.training.state import init_train_state, split_model

    assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
    n, hw, b = 3, 32, 8
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(b, hw, hw, 3)).astype(np.float32),
             "label": rng.integers(0, n, (b, hw, hw)).astype(np.int32)}
    tx = sgd_coupled(1e-2, 0.9, 5e-4)

    def run(devices, local_batch):
        mesh = make_mesh(devices)
        model_def, p, bs, r = split_model(build_model("small", n, seed=1), "small")
        state = replicate(init_train_state(p, bs, r, tx), mesh)
        step = make_backbone_step(model_def, tx, lambda s: 1e-2, num_classes=n, ignore_label=255,
                                  aux_weight=0.4, mesh=mesh)
        losses = []
        for _ in range(2):
            state, metrics = step(state, shard_batch(local_batch, mesh))
            losses.append(float(metrics["loss"]))
        return losses, [np.asarray(x) for x in jax.tree.leaves(to_host((state.params, state.batch_stats)))]

    half = b // 2
    me = jax.process_index()
    l_global, p_global = run(jax.devices(), {k: v[me * half:(me + 1) * half] for k, v in batch.items()})
    l_single, p_single = run(jax.local_devices()[:1], batch)
    print("RESULT " + json.dumps({
        "loss_diff": max(abs(a - c) for a, c in zip(l_global, l_single)),
        "param_diff": max(float(np.max(np.abs(a - c))) for a, c in zip(p_global, p_single)),
    }), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(args: list[str], cwd: Path, devices_per_process: int = 1) -> list[subprocess.CompletedProcess]:
    """Runs `python ARGS` as processes 0 and 1 of one jax.distributed job; waits for both."""
    port = _free_port()
    procs = []
    for pid in (0, 1):
        env = dict(os.environ)
        env.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
            JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
            PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.slow
def test_two_processes_step_equals_one_device(tmp_path):
    results = _launch(["-c", STEP_SCRIPT], tmp_path, devices_per_process=2)
    for r in results:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        result = json.loads(line[len("RESULT ") :])
        assert result["loss_diff"] <= 1e-5, result
        assert result["param_diff"] <= 1e-5, result


@pytest.mark.slow
def test_two_process_main_trains_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    base = [str(REPO / "main.py"), f"--config={REPO / 'tests' / 'configs' / 'tiny.py'}", f"--workdir={workdir}",
            f"--config.data.root={tmp_path / 'data'}"]

    first = _launch(base + ["--config.train.max_steps=4"], tmp_path)
    for r in first:
        assert r.returncode == 0, r.stderr[-4000:]
    assert "2 process(es)" in first[0].stderr
    ckpts = workdir / "checkpoints" / "backbone"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4]
    assert (workdir / "weights" / "backbone" / "commit_success.txt").is_file()

    second = _launch(base + ["--config.train.max_steps=6"], tmp_path)
    for r in second:
        assert r.returncode == 0, r.stderr[-4000:]
        assert "resumed from step 4" in r.stderr
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())[-1] == 6
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]  # process 0 logs, once

    from magnet_jax.weights import load_model_weights

    load_model_weights(str(workdir / "weights" / "backbone"), "small", 5)  # complete, loadable
