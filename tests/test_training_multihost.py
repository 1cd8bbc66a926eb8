"""Multi-process ("several hosts") training on one machine: two CPU processes joined by
`jax.distributed` (launched through the `JAX_COORDINATOR_ADDRESS` / `JAX_NUM_PROCESSES` /
`JAX_PROCESS_ID` variables that `magnet_jax.sharding.maybe_initialize_distributed` reads).

- A training step over the global mesh of 2 processes x 2 devices, each process feeding its half of
  the batch, gives the loss and parameters of the same step on one device
  (`helpers.children.two_process_step_vs_one_device`, launched by `helpers.multidevice`).
- `main.py` trains in two processes (per-process data shards, one orbax checkpoint directory, the
  weights exported by process 0) and a rerun of the same two commands resumes.
"""

from __future__ import annotations

import json

import pytest
from helpers.multidevice import launch_processes, run_distributed
from helpers.shared import REPO


@pytest.mark.slow
def test_two_processes_step_equals_one_device(tmp_path):
    results = run_distributed("helpers.children:two_process_step_vs_one_device", cwd=tmp_path, devices_per_process=2)
    assert len(results) == 2
    for result in results:
        assert result["loss_diff"] <= 1e-5, result
        assert result["param_diff"] <= 1e-5, result


@pytest.mark.slow
def test_two_process_main_trains_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    base = [str(REPO / "main.py"), f"--config={REPO / 'tests' / 'configs' / 'tiny.py'}", f"--workdir={workdir}",
            f"--config.data.root={tmp_path / 'data'}"]

    first = launch_processes(base + ["--config.train.max_steps=4"], tmp_path)
    for r in first:
        assert r.returncode == 0, r.stderr[-4000:]
    assert "2 process(es)" in first[0].stderr
    ckpts = workdir / "checkpoints" / "backbone"
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [2, 4]
    assert (workdir / "weights" / "backbone" / "commit_success.txt").is_file()

    second = launch_processes(base + ["--config.train.max_steps=6"], tmp_path)
    for r in second:
        assert r.returncode == 0, r.stderr[-4000:]
        assert "resumed from step 4" in r.stderr
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())[-1] == 6
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]  # process 0 logs, once

    from magnet_jax.weights import load_model_weights

    load_model_weights(str(workdir / "weights" / "backbone"), "small", 5)  # complete, loadable
