"""Runs a new user gets wrong through `main.py`: a refused run records nothing, an evaluation never replaces a
training's outputs or reports an mIoU of nothing, `--mode=check` fails without data, the synthetic data
never replaces a user's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jax
import numpy as np
import pytest
from conftest import REPO, run_main
from helpers.cli import one_line_error, tree_hash

TINY = str(REPO / "tests" / "configs" / "tiny.py")
DEEPGLOBE = str(REPO / "configs" / "deepglobe.py")


@pytest.mark.slow  # one tiny training run (~20 s on two shared cores)
def test_a_refused_run_records_nothing_and_the_corrected_command_runs(tmp_path):
    work, data, foreign = tmp_path / "w", tmp_path / "data", tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    base = ["--config", TINY, "--workdir", str(work)]
    proc = run_main([*base, f"--config.data.root={data}", "--config.data.num_classes=7",
                     "--config.data.class_names=a,b,c,d,e,f,g"])  # fmt: skip
    assert one_line_error(proc).endswith("config.data.num_classes is 7 but the synthetic dataset has 5 classes")
    assert not work.exists() and not data.exists()  # a config check: nothing created, nothing generated
    proc = run_main([*base, f"--config.data.root={foreign}"])  # a wrong data.root: refused at the data
    assert "is not empty and is not a synthetic dataset magnet-jax generated" in one_line_error(proc)
    assert not (work / "config.json").exists() and os.listdir(foreign) == ["notes.txt"]
    proc = run_main([*base, f"--config.data.root={data}", "--config.train.max_steps=1",
                     "--config.train.log_every_steps=1"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((work / "config.json").read_text())["data"]["root"] == str(data)
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    head, steps = records[0], [r for r in records if r["kind"] == "train"]
    assert head["kind"] == "run" and head["git_commit"] and head["backend"] == "cpu" and "fraction" in head["units"]
    assert steps and all(0.0 <= r["iou"] <= 1.0 for r in steps)  # fractions in files (percent only on screen)


def test_evaluate_in_a_training_workdir_is_refused(tmp_path):
    from magnet_jax.commands.workdir import write_record
    from magnet_jax.config import load_config_file

    work = tmp_path / "train"
    work.mkdir()
    write_record(load_config_file(TINY), work, "train")
    (work / "results.json").write_text('{"the": "training\'s"}\n')
    before = tree_hash(work)
    proc = run_main(["--config", TINY, "--mode=evaluate", "--workdir", str(work), "--config.magnet.n_points=0.5"])
    line = one_line_error(proc)
    assert f"--workdir {work} holds a training run (config.json)" in line and f"e.g. {work / 'eval'}" in line
    assert tree_hash(work) == before


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> list[str]:
    from magnet_jax.models import build_model
    from magnet_jax.weights import save_model_weights

    root = tmp_path_factory.mktemp("weights")
    save_model_weights(build_model("small", 5), root / "backbone", model_name="small", num_classes=5)
    save_model_weights(build_model("refinement", 5, seed=1), root / "refiner", model_name="refinement", num_classes=5)
    return [f"--config.checkpoint.backbone={root / 'backbone'}", f"--config.checkpoint.refiners={root / 'refiner'}"]


def test_no_patches_means_coarse_only_and_no_images_is_refused(tmp_path, random_weights):
    data, work = tmp_path / "data", tmp_path / "eval"
    base = ["--config", TINY, "--mode=evaluate", f"--config.data.root={data}", *random_weights]
    proc = run_main([*base, "--workdir", str(work), "--config.magnet.n_patches=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((work / "results.json").read_text())
    assert res["miou"]["stages"] == [res["miou"]["coarse"]] and res["miou"]["refined"] == res["miou"]["coarse"]
    assert np.sum(res["confusion"]["refined"]) == 64 * 64  # the one test image, every pixel scored
    assert res["provenance"]["git_commit"] and res["provenance"]["backend"] == jax.default_backend()
    assert max(map(len, proc.stderr.splitlines())) < 300 and "checkpoint_handler" not in proc.stderr  # orbax quiet
    proc = run_main([*base, "--workdir", str(tmp_path / "none"), "--config.eval.max_images=0"])
    assert one_line_error(proc).endswith("config.eval.max_images: expected -1 (every image) or a count >= 1, got 0")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--config.train.lr=-0.1", "config.train.lr: expected a learning rate > 0, got -0.1"),
        ("--config.train.backbone_phase.lr=0.0", "train.backbone_phase.lr: expected a learning rate > 0, got 0.0"),
        ("--config.data.num_workers=-1", "config.data.num_workers: expected >= 0 (0: read in this process), got -1"),
        ("--config.train.eval_max_images=0", "train.eval_max_images: expected -1 (every image) or a count >= 1, got 0"),
    ],
)  # fmt: skip
def test_training_fields_out_of_range_are_refused(tmp_path, flag, expected):
    config = str(REPO / "configs" / "synthetic.py") + ":smoke"
    proc = run_main(["--config", config, "--workdir", str(tmp_path / "w"), flag])
    assert one_line_error(proc).endswith(expected) and not (tmp_path / "w").exists()


def _deepglobe(root: Path, *, small_first_label: bool = False, missing: bool = False) -> list[str]:
    """Three DeepGlobe samples under `root` listed in test.txt (train / val lists empty: not checked)."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        side = 32 if small_first_label and i == 0 else 64
        label = np.zeros((side, side, 3), np.uint8)
        label[:, : side // 2] = (255, 255, 0)  # BGR of agriculture (yellow)
        cv2.imwrite(str(root / f"{i}_sat.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(root / f"{i}_mask.png"), label)
        lines.append(f"{i}_sat.jpg\t{i}_mask.png")
    lines += ["9_sat.jpg\t9_mask.png"] if missing else []
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return ["--config", DEEPGLOBE, "--mode=check", f"--config.data.root={root}", "--config.data.train_list=",
            "--config.data.val_list=", f"--config.data.test_list={root / 'test.txt'}"]  # fmt: skip


def test_check_without_data_fails_naming_the_folder_and_the_download(tmp_path):
    proc = run_main(["--config", DEEPGLOBE, "--mode=check", "--workdir", str(tmp_path / "c"),
                     f"--config.data.root={tmp_path / 'absent'}"])  # fmt: skip
    line = one_line_error(proc)
    assert f"train: dataset folder '{tmp_path / 'absent'}' (config.data.root) does not exist" in line
    assert "data/prepare_deepglobe.py" in line and "every sample is usable" not in proc.stdout


@pytest.mark.parametrize(
    ("kind", "problem"),
    [("missing", "image not found: {root}/9_sat.jpg"), ("small_first_label", "its label {root}/0_mask.png is 32x32")],
)
def test_check_counts_each_bad_sample_of_a_split(tmp_path, kind, problem):
    root = tmp_path / "dg"
    root.mkdir()
    proc = run_main([*_deepglobe(root, **{kind: True}), "--workdir", str(tmp_path / "c")])
    n = 4 if kind == "missing" else 3
    assert f"main.py: error: 1 of {n} samples failed the check; the report is {tmp_path}" in one_line_error(proc, 1)
    report = json.loads((tmp_path / "c" / "check_report.json").read_text())
    assert report["splits"]["test"] == {"checked": n, "failed": 1}
    assert report["splits"]["train"] == {"checked": 0, "skipped": "config.data.train_list is empty"}
    assert problem.format(root=root) in report["failures"][0]["problem"]


def _synthetic_check(work: Path, root: Path, *flags: str):
    return run_main(["--config", str(REPO / "configs" / "synthetic.py") + ":smoke", "--mode=check",
                     "--workdir", str(work), f"--config.data.root={root}", *flags])  # fmt: skip


def test_synthetic_data_is_never_regenerated_over_a_users_files(tmp_path):
    data = tmp_path / "D"
    proc = _synthetic_check(tmp_path / "c", data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"generating the synthetic dataset (20 images of 256x256) into {data} ..." in proc.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert data.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes a folder, not private
    (data / "notes.txt").write_text("mine\n")
    before = tree_hash(data)
    proc = _synthetic_check(tmp_path / "c", data, "--config.data.synthetic.seed=7")
    line = one_line_error(proc)
    assert f"'{data}' holds a synthetic dataset made with other settings and files magnet-jax did not write" in line
    assert "(notes.txt); nothing was deleted" in line and tree_hash(data) == before
    (data / "notes.txt").unlink()  # only what magnet-jax generated there: regenerated with the new seed
    assert _synthetic_check(tmp_path / "c", data, "--config.data.synthetic.seed=7").returncode == 0
    assert json.loads((data / "synthetic.json").read_text())["seed"] == 7


def test_a_killed_generation_leaves_its_temporary_folder_only_until_the_next_start(tmp_path):
    args = [sys.executable, str(REPO / "main.py"), "--config", str(REPO / "configs" / "synthetic.py"),
            "--mode=check", "--workdir", str(tmp_path / "c"), f"--config.data.root={tmp_path / 'big'}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the message comes before the first image is written
        if line.startswith("generating the synthetic dataset (152 images of 1024x1024) into"):
            break
    assert proc.poll() is None, "the generation message did not come before the work"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [p.name.startswith(".synthetic_tmp_") for p in tmp_path.iterdir()].count(True) == 1
    proc = _synthetic_check(tmp_path / "c", tmp_path / "small")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".synthetic_tmp_")]


def test_the_synthetic_sweep_writes_its_data_under_its_workdir(tmp_path):
    from magnet_jax.config import load_config_file
    from magnet_jax.data.datasets.synthetic import folder_for

    config = load_config_file(REPO / "configs" / "sweeps" / "synthetic.py")
    assert folder_for(config, workdir=str(tmp_path)) == str(tmp_path / "synthetic_data")  # not ./runs/...
