"""`--mode=predict` in this process, as main.py runs it (check_config, then run_predict): a 64 px image gives a
64 px label PNG whose values are the predicted class ids."""

from __future__ import annotations

import json

import cv2
import numpy as np
from helpers.cli import save_random_weights, write_random_images
from helpers.shared import REPO

from magnet_jax.commands.checks import check_config
from magnet_jax.commands.predict import run_predict
from magnet_jax.config import load_config_file


def test_predict_writes_a_label_png_of_the_image_size(tmp_path):
    weights = save_random_weights(tmp_path / "weights", "small", 5)
    images = write_random_images(tmp_path / "imgs", 1, (64, 64))
    config = load_config_file(REPO / "tests" / "configs" / "tiny.py")  # scales 32-32,64-64, 5 classes
    config.checkpoint.backbone = str(weights / "backbone")
    config.checkpoint.refiners = str(weights / "refiner")
    config.predict.label_format = "ids"
    check_config(config, "predict")
    work = tmp_path / "out"

    written = run_predict(config, str(work), [str(images / "im0.png")])

    assert written == [str(work / "im0")]
    ids = cv2.imread(str(work / "im0" / "im0_ids.png"), cv2.IMREAD_UNCHANGED)
    assert ids is not None and ids.shape == (64, 64) and ids.dtype == np.uint8
    final = np.load(work / "im0" / "predictions.npz")["stage1"]  # the last stage, at the image size here
    np.testing.assert_array_equal(ids, final)
    assert set(np.unique(ids).tolist()) <= set(range(5))
    summary = json.loads((work / "predict_summary.json").read_text())
    assert [e["image"] for e in summary["images"]] == [str(images / "im0.png")] and summary["skipped"] == []
