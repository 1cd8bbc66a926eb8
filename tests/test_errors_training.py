"""Training when the machine gets in the way, through `main.py`: an unreadable checkpoint (the one before
is resumed, to the same model), a full disk, Ctrl-C, a second training in the same workdir, a run
stopped by `max_steps` and rerun without it (the model of an uninterrupted run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_main
from helpers.cli import one_line_error as _one_line_error
from helpers.small_disk import KINDS, MESSAGES, run_main_in, small_disk

TINY = str(REPO / "tests" / "configs" / "tiny.py")


def _args(work: Path, data: Path, *extra: str) -> list[str]:
    return ["--config", TINY, "--workdir", str(work), f"--config.data.root={data}", *extra]


def _rows(work: Path) -> list[tuple]:
    """metrics.jsonl as (run, kind, step, loss) rows (times and speeds differ between runs; the `run` records
    that open each start or resume are left out)."""
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return [(r["run"], r["kind"], r["step"], r.get("loss"), r.get("miou")) for r in rows if r["kind"] != "run"]


def _weights(work: Path) -> list[np.ndarray]:
    import jax
    from flax import nnx

    from magnet_jax.weights import load_model_weights

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(load_model_weights(str(work / "weights" / "backbone"),
                                                                                "small", 5)))]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, data) of a whole tiny training: 8 steps, checkpoints 4, 6 and 8 kept."""
    root = tmp_path_factory.mktemp("finished")
    work, data = root / "work", root / "data"
    proc = run_main(_args(work, data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(int(p.name) for p in (work / "checkpoints" / "backbone").iterdir()) == [4, 6, 8]
    return work, data


def _damage(step_dir: Path, how: str) -> Path:
    """Deletes or zero-fills the largest array file of a checkpoint; returns it."""
    files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)  # fmt: skip
    target = files[-1]
    if how == "delete":
        target.unlink()
    else:
        target.write_bytes(bytes(target.stat().st_size))
    return target


def test_unreadable_checkpoints_fall_back_to_the_one_before(finished, tmp_path):
    """Step 8 zero-filled, step 6 missing a file: one note each, step 4 is resumed, and the retrained model
    and its logs are those of the run that was never damaged."""
    work = tmp_path / "work"
    shutil.copytree(finished[0], work)
    ckpts = work / "checkpoints" / "backbone"
    _damage(ckpts / "8", "zero")
    _damage(ckpts / "6", "delete")
    proc = run_main(_args(work, finished[1]))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note: backbone: checkpoint step")]
    assert len(notes) == 2, proc.stderr[-3000:]
    assert notes[0].startswith(f"note: backbone: checkpoint step 8 in {ckpts} cannot be read (")
    assert notes[1].startswith(f"note: backbone: checkpoint step 6 in {ckpts} cannot be read (")
    assert f"moved to {ckpts}.unreadable/8, trying the one before" in notes[0]
    assert "resumed from step 4" in proc.stderr
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [4, 6, 8]  # saved again
    for a, b in zip(_weights(work), _weights(finished[0]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _rows(work) == _rows(finished[0])  # steps 5-8 logged again, not twice


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, kind):
    with small_disk(kind, tmp_path, 1024) as (disk, limit):
        work = disk / "w"
        proc = run_main_in(_args(work, tmp_path / "data"), REPO, fsize_kb=limit)
        line = _one_line_error(proc)
        assert MESSAGES[kind] in line and f"{work}" in line, line
        assert len(proc.stderr.splitlines()) < 40, proc.stderr[-3000:]


def _popen(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "main.py"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_a_second_training_is_refused_and_ctrl_c_says_how_to_resume(tmp_path):
    work, data = tmp_path / "work", tmp_path / "data"
    first = _popen(_args(work, data, "--config.train.epochs=100000"))
    try:
        metrics = work / "metrics.jsonl"
        deadline = time.time() + 300
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 5):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
            time.sleep(0.2)
        second = run_main(_args(work, data, "--config.train.epochs=100000"))
        line = _one_line_error(second)
        assert f"--workdir {work}: in use by another run (pid {first.pid})" in line
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("main.py: error: interrupted at step ")
    assert " of 200000 (backbone; the checkpoint of step " in last
    assert last.endswith("is kept); rerun the same command to resume"), last
    kept = int(last.split("the checkpoint of step ")[1].split()[0])
    rows = _rows(work)
    assert len(rows) == len(set(rows))  # one writer: no row twice
    proc = run_main(_args(work, data, "--config.train.epochs=100000", f"--config.train.max_steps={kept + 2}"))
    assert proc.returncode == 0 and f"resumed from step {kept}" in proc.stderr, proc.stderr[-3000:]
    steps = [(r[0], r[1], r[2]) for r in _rows(work)]
    assert len(steps) == len(set(steps)) and ("backbone", "train", kept + 2) in steps


@pytest.mark.slow
@pytest.mark.xdist_group("smoke_run")
def test_max_steps_is_partial_and_the_rerun_gives_the_uninterrupted_model(smoke_run, tmp_path):
    """The probe: `SM --config.train.max_steps=2`, then `SM`: MagNet 10.63 against 7.11 uninterrupted before
    (the refiner resumed steps trained on the 2-step backbone)."""
    work = tmp_path / "w"
    smoke = ["--config", str(REPO / "configs" / "synthetic.py") + ":smoke", "--workdir", str(work)]
    proc = run_main([*smoke, "--config.train.max_steps=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped = json.loads((work / "results.json").read_text())
    assert stopped["partial"] is True
    assert stopped["stopped_early"] == {"backbone": {"step": 2, "epochs_done": 1.0, "epochs": 2},
                                        "refiner": {"step": 2, "epochs_done": 1.0, "epochs": 2}}  # fmt: skip
    assert "results.json is marked partial: training stopped early by config.train.max_steps" in proc.stdout
    assert "backbone: stopped at step 2 of 4 (config.train.max_steps)" in proc.stderr
    proc = run_main(smoke)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: refiner: its checkpoints were trained on an earlier state of the backbone" in proc.stderr
    resumed, whole = (json.loads((w / "results.json").read_text()) for w in (work, smoke_run))
    assert resumed["partial"] is False and "stopped_early" not in resumed
    assert resumed["miou"] == whole["miou"]
    rows = [r[:3] for r in _rows(work)]
    assert len(rows) == len(set(rows))
