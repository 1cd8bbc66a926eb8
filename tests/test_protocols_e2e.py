"""Gleason 2019 and Inria Aerial (binary) as a user runs them: the challenge's folder layout (fake,
tiny images) -> the prepare script -> `main.py` training (backbone, refiner, held-out evaluation)
-> `--mode=evaluate` -> `--mode=predict`, each naming its protocol (split, list checksum, metric)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_main
from helpers.fakes import write_gleason_download, write_inria

from magnet_jax.data import read_file_list

pytestmark = pytest.mark.slow

TINY = ["--config.model.backbone=small", "--config.magnet.scales=8-8,16-16", "--config.magnet.crop_size=8-8",
        "--config.magnet.input_size=8-8", "--config.train.backbone_crop_sizes=8-8,16-16",
        "--config.train.batch_size=2", "--config.train.target=all", "--config.train.max_steps=2",
        "--config.train.eval_every_epochs=0",
        "--config.train.ohem_min_kept=50", "--config.data.num_workers=0", "--config.train.progress=False",
        "--config.eval.max_images=3"]  # fmt: skip


def _names(list_file: Path) -> list[str]:
    return [os.path.splitext(os.path.basename(i))[0] for i, _ in read_file_list(str(list_file), str(REPO),
                                                                                   check_files=False)]


def _prepare(script: str, args: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "data" / script), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _train_evaluate_predict(config: str, root: Path, lists: Path, tmp_path: Path, split: str, image: Path) -> dict:
    data = [f"--config.data.root={root}"] + [f"--config.data.{s}_list={lists / f'{s}.txt'}"
                                             for s in ("train", "val", "test") if (lists / f"{s}.txt").is_file()]
    work = tmp_path / "train"
    proc = run_main(["--config", config, "--workdir", str(work), *data, *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = json.loads((work / "results.json").read_text())
    weights = [f"--config.checkpoint.backbone={work / 'weights' / 'backbone'}",
               f"--config.checkpoint.refiners={work / 'weights' / 'refiner'}"]  # fmt: skip
    proc = run_main(["--config", config, "--mode=evaluate", "--workdir", str(tmp_path / "eval"), *data, *TINY,
                     *weights])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["split"] == split and evaluated["protocol"]["list_sha256"]
    assert evaluated["miou"]["refined"] == trained["miou"]["refined"]  # same weights, same images, same numbers
    proc = run_main(["--config", config, "--mode=predict", "--image", str(image), "--workdir",
                     str(tmp_path / "pred"), *TINY, *weights])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = np.load(tmp_path / "pred" / image.stem / "predictions.npz")
    assert preds["stage1"].shape == (16, 16)
    return evaluated


def test_inria_binary_prepare_train_evaluate_predict(tmp_path):
    standard = REPO / "data" / "list" / "inria"
    tiles = [t for s in ("train", "val", "test") for t in _names(standard / f"{s}.txt")]
    write_inria(str(tmp_path / "src"), tiles, size=16)
    root, lists = tmp_path / "src", tmp_path / "lists"
    _prepare("prepare_inria.py", ["--root", str(root), "--lists", str(lists)])
    image = root / "AerialImageDataset" / "train" / "images" / "vienna3.tif"
    res = _train_evaluate_predict(str(REPO / "configs" / "inria.py"), root, lists, tmp_path, "test", image)
    assert len(res["class_names"]) == 2
    assert res["metric"] == "iou_class:1" and res["overall"]["metric"] == "iou_class:1"
    assert res["overall"]["refined"] == pytest.approx(res["iou"]["refined"][1])  # the building IoU
    assert res["protocol"]["standard_split"] is True


def test_gleason_prepare_train_evaluate_predict(tmp_path):
    standard = REPO / "data" / "list" / "gleason"
    cores = [c for s in ("train", "val") for c in _names(standard / f"{s}.txt")]
    write_gleason_download(str(tmp_path / "download"), cores, size=16)
    root, lists = tmp_path / "gleason", tmp_path / "lists"
    _prepare("prepare_gleason.py", ["--download", str(tmp_path / "download"), "--root", str(root),
                                    "--lists", str(lists)])  # fmt: skip
    image = tmp_path / "download" / "Train Imgs" / f"{cores[0]}.jpg"
    res = _train_evaluate_predict(str(REPO / "configs" / "gleason.py"), root, lists, tmp_path, "val", image)
    assert res["metric"] == "fwiou" and len(res["class_names"]) == 5
    from magnet_jax.metrics import overall_score

    conf = np.array(res["confusion"]["refined"])
    assert res["overall"]["refined"] == pytest.approx(overall_score(conf, res["miou_classes"], "fwiou"))
