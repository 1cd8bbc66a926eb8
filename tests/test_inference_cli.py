"""`main.py --mode=predict` and `--mode=evaluate` end to end (real FPN, small scales, saved checkpoints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "--config.magnet.crop_size=64-64",
    "--config.magnet.input_size=64-64",
    "--config.magnet.n_points=0.5",
    "--config.magnet.smooth_kernel=3",
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from magnet_jax.checkpoints import save_model_weights
    from magnet_jax.models import build_model

    root = tmp_path_factory.mktemp("cli")
    save_model_weights(build_model("fpn", 7), root / "backbone", model_name="fpn", num_classes=7)
    save_model_weights(build_model("refinement", 7, seed=1), root / "refiner", model_name="refinement", num_classes=7)
    rng = np.random.default_rng(0)
    (root / "imgs").mkdir()
    for i in range(2):
        cv2.imwrite(str(root / "imgs" / f"im{i}.png"), rng.integers(0, 255, (130, 150, 3), dtype=np.uint8))
    return root


def _main(args, cwd, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_predict_command(assets, tmp_path):
    out = tmp_path / "out"
    proc = _main(
        [
            "--config",
            str(REPO / "configs" / "deepglobe.py"),
            "--mode=predict",
            "--image",
            str(assets / "imgs" / "im*.png"),
            "--workdir",
            str(out),
            f"--config.checkpoint.backbone={assets / 'backbone'}",
            f"--config.checkpoint.refiners={assets / 'refiner'}",
            "--config.magnet.scales=64-64,128-128,256-256",
            "--config.magnet.n_patches=2",
            "--config.magnet.compat=reference",
            *SMALL,
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("im0", "im1"):
        folder = out / name
        preds = np.load(folder / "predictions.npz")
        assert sorted(preds.files) == ["stage0", "stage1", "stage2"]
        assert preds["stage0"].shape == (64, 64) and preds["stage2"].shape == (256, 256)
        assert preds["stage1"].dtype == np.uint8 and preds["stage1"].max() < 7
        for f in (
            "stage0_64x64_overlay.png",
            "stage2_256x256_overlay.png",
            "stage1_uncertainty.png",
            "stage2_error.png",
        ):
            img = cv2.imread(str(folder / f))
            assert img is not None, f
        assert cv2.imread(str(folder / "stage0_64x64_overlay.png")).shape == (130, 150, 3)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert len(summary["images"]) == 2


def test_predict_bad_inputs(assets, tmp_path):
    from magnet_jax.config import default_config
    from magnet_jax.inference.predict import expand_images, run_predict

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        run_predict(default_config(), str(tmp_path / "o"), [str(bad)])
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_images([str(tmp_path / "missing.png")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_images([str(tmp_path / "*.tif")])
    assert len(expand_images([str(assets / "imgs"), str(assets / "imgs" / "im0.png")])) == 2  # deduplicated


def test_evaluate_on_tiny_deepglobe_list(assets, tmp_path):
    from configs.deepglobe import get_config
    from magnet_jax.config import validate_config
    from magnet_jax.inference.evaluate import run_evaluate

    colors = [(0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    rng = np.random.default_rng(1)
    lines = []
    for i in range(2):
        label = np.zeros((140, 120, 3), np.uint8)
        label[:, :60] = colors[2 + i]
        label[70:, 60:] = colors[5]
        cv2.imwrite(str(tmp_path / f"{i}_sat.jpg"), rng.integers(0, 255, (140, 120, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / f"{i}_mask.png"), label[:, :, ::-1])  # RGB colours, written as BGR
        lines.append(f"{i}_sat.jpg\t{i}_mask.png")
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n")
    c = get_config()
    c.data.root = str(tmp_path)
    c.data.test_list = str(tmp_path / "test.txt")
    c.magnet.scales = "64-64,128-128,256-256"
    c.magnet.crop_size, c.magnet.input_size, c.magnet.n_points, c.magnet.smooth_kernel = "64-64", "64-64", 0.5, 3
    c.checkpoint.backbone = str(assets / "backbone")
    c.checkpoint.refiners = f"{assets / 'refiner'},{assets / 'refiner'}"  # one per refinement stage
    c.eval.save_pictures = True
    validate_config(c)
    work = tmp_path / "work"
    res = run_evaluate(c, str(work))
    saved = json.loads((work / "results.json").read_text())
    assert saved["num_images"] == 2 and saved["miou_classes"] == [1, 2, 3, 4, 5, 6]
    assert np.array(saved["refined"]["confusion"]).sum() == 2 * 140 * 120
    assert res["coarse"]["miou"] == pytest.approx(np.mean(np.array(res["coarse"]["iou"])[1:]))
    assert len(list((work / "pictures").glob("*.png"))) == 2
