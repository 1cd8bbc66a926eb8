"""`configs/synthetic.py:smoke` through the real command line: generate -> backbone with validation ->
refiner with validation and precise BN -> the three-way evaluation, every output in its place."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.xdist_group("smoke_run")  # with pytest -n: one smoke run (conftest)
def test_smoke_config_runs_the_main_job_path(smoke_run):
    results = json.loads((smoke_run / "results.json").read_text())
    assert results["schema"] == "magnet-jax/results/2" and results["partial"] is False
    assert results["num_images"] == 2 and results["split"] == "test"
    assert set(results["miou"]) == {"coarse", "patch", "refined", "stages"}
    assert len(results["miou"]["stages"]) == 3  # scales 64 -> 128 -> 256
    assert results["miou"]["stages"][0] == results["miou"]["coarse"]
    assert results["miou"]["stages"][-1] == results["miou"]["refined"]
    for view in ("coarse", "patch", "refined"):
        assert np.array(results["confusion"][view]).sum() == 2 * 256 * 256  # every pixel scored once
    assert results["compute"]["backbone_passes"] == 1 + 4 + 16 and results["compute"]["gflops"] > 0
    assert set(results["wall_s"]) == {"backbone", "refiners", "total"}
    assert results["config"]["data.synthetic.size"] == 256  # the numbers name the config they came from
    assert results["protocol"]["split"] == "test" and results["protocol"]["metric"] == "miou"

    events = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    evals = {(e["run"], e["kind"]) for e in events if e["kind"] == "eval"}
    assert evals == {("backbone", "eval"), ("refiner", "eval")}  # validation ran in both phases
    assert all(0.0 <= e["miou"] <= 1.0 for e in events if e["kind"] == "eval")
    for run in ("backbone", "refiner"):
        assert (smoke_run / "weights" / run).is_dir()
    assert len(list((smoke_run / "pictures").glob("*.png"))) == 1
    record = json.loads((smoke_run / "config.json").read_text())
    assert record["_magnet_jax"]["mode"] == "train" and record["magnet"]["scales"] == "64-64,128-128,256-256"
    stdout = (smoke_run / "stdout.txt").read_text()
    assert "mIoU after each stage" in stdout and "MagNet" in stdout
