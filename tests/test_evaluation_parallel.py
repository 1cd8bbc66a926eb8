"""`--mode=evaluate` over devices and processes: the smoke run's weights give the same numbers on one
device, on 4 simulated CPU devices, tile by tile (`streamed=on`) and on two processes sharing the split;
processes that disagree, or that do not share the workdir, or that die, stop with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_main
from helpers.multidevice import start_processes, wait_processes

from magnet_jax.evaluation.evaluator import prefetched
from magnet_jax.evaluation.processes import process_images

pytestmark = pytest.mark.xdist_group("smoke_run")  # with pytest -n: one smoke run (conftest)
SMOKE = str(REPO / "configs" / "synthetic.py") + ":smoke"


def _args(smoke_run: Path, workdir: Path, *extra: str) -> list[str]:
    return [str(REPO / "main.py"), "--config", SMOKE, "--mode=evaluate", "--workdir", str(workdir),
            f"--config.checkpoint.backbone={smoke_run / 'weights' / 'backbone'}",
            f"--config.checkpoint.refiners={smoke_run / 'weights' / 'refiner'}",
            f"--config.data.root={smoke_run / 'synthetic_data'}", *extra]  # fmt: skip


def _results(workdir: Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _same_numbers(a: dict, b: dict) -> None:
    assert a["num_images"] == b["num_images"] == 2
    assert a["miou"] == b["miou"]
    assert a["confusion"] == b["confusion"]
    assert a["compute"]["points_refined"] == b["compute"]["points_refined"]


@pytest.fixture(scope="module")
def one_device(smoke_run, tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("eval1")
    proc = run_main(_args(smoke_run, workdir)[1:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(workdir)
    assert res["processes"] == 1 and res["devices_per_process"] == 1 and res["partial"] is False
    return res


def test_four_devices_and_tiled_give_the_same_miou(smoke_run, one_device, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO))  # fmt: skip
    four = subprocess.run([sys.executable, *_args(smoke_run, tmp_path / "four")], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert four.returncode == 0, four.stderr[-3000:]
    assert _results(tmp_path / "four")["devices_per_process"] == 4
    _same_numbers(_results(tmp_path / "four"), one_device)
    tiled = run_main(_args(smoke_run, tmp_path / "tiled", "--config.magnet.streamed=on")[1:])
    assert tiled.returncode == 0, tiled.stderr[-3000:]
    _same_numbers(_results(tmp_path / "tiled"), one_device)
    # real predictions: refinement wrote points, and more than one class is predicted right
    assert min(one_device["compute"]["points_refined"]) > 0
    assert sum(np.diag(one_device["confusion"]["refined"]) > 0) >= 2


def test_round_robin_split_and_prefetch_order():
    shares = [list(process_images(7, p, 3)) for p in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(7))  # none dropped, none twice
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    source = [{"n": i} for i in range(5)]
    got = list(prefetched(source, range(5), lambda s: {**s, "seen": True}, workers=2))
    assert [i for i, _ in got] == list(range(5)) and all(s["seen"] for _, s in got)

    class Broken(list):
        def __getitem__(self, i):
            if i == 3:
                raise OSError("unreadable file")
            return super().__getitem__(i)

    got = list(prefetched(Broken(source), range(5), lambda s: s, workers=2))
    assert [i for i, _ in got] == [0, 1, 2, 3] and isinstance(got[-1][1], OSError)  # stops at the failure


def _start(args_per_process: list[list[str]]) -> list[subprocess.Popen]:
    return start_processes(args_per_process)


def _wait(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    return [(p.returncode, p.stderr) for p in wait_processes(procs, timeout)]


@pytest.mark.slow
def test_two_processes_share_the_split(smoke_run, one_device, tmp_path):
    workdir = tmp_path / "two"
    done = _wait(_start([_args(smoke_run, workdir)] * 2))
    for code, err in done:
        assert code == 0, err[-3000:]
    res = _results(workdir)
    assert res["processes"] == 2 and res["partial"] is False
    _same_numbers(res, one_device)
    assert not list(workdir.glob(".process*"))  # the shared-folder markers are gone


@pytest.mark.slow
def test_two_processes_that_disagree_or_do_not_share_the_workdir(smoke_run, tmp_path):
    base = _args(smoke_run, tmp_path / "w")
    done = _wait(_start([base, [*base, "--config.magnet.n_points=0.5"]]))
    for code, err in done:
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert err.strip().splitlines()[-1].startswith("main.py: error: process "), err[-2000:]
        assert "magnet.n_points" in err.strip().splitlines()[-1]
    assert not (tmp_path / "w" / "results.json").exists()
    done = _wait(_start([_args(smoke_run, tmp_path / "a"), _args(smoke_run, tmp_path / "b")]))
    for code, err in done:
        assert code == 2 and "is not shared between processes" in err.strip().splitlines()[-1], err[-2000:]


@pytest.mark.slow
def test_a_process_that_dies_is_named_by_the_survivor(smoke_run, tmp_path):
    workdir = tmp_path / "w"
    args = _args(smoke_run, workdir, "--config.eval.process_timeout_s=20")
    procs = _start([args, args])
    for line in procs[1].stdout:  # process 1 prints the plan once it has joined and passed the run checks
        if line.startswith("MagNet plan"):
            break
    assert procs[1].poll() is None, "process 1 ended before it could be stopped"
    procs[1].send_signal(signal.SIGKILL)
    code, err = _wait(procs[:1])[0]
    procs[1].wait()
    last = err.strip().splitlines()[-1]
    assert code != 0 and "process 1" in last, err[-3000:]
    assert not (workdir / "results.json").exists()  # nothing describes a partial split as whole
