"""`main.py --mode=predict` and `--mode=evaluate` end to end (real FPN, small scales, saved checkpoints)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from helpers.cli import run_main as _main
from helpers.cli import save_random_weights, write_random_images
from helpers.shared import REPO

SMALL = [
    "--config.magnet.crop_size=64-64",
    "--config.magnet.input_size=64-64",
    "--config.magnet.n_points=0.5",
    "--config.magnet.smooth_kernel=3",
]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random `fpn` backbone and refiner (7 classes) and two 130x150 images under imgs/."""
    root = save_random_weights(tmp_path_factory.mktemp("cli"), "fpn", 7)
    write_random_images(root / "imgs", 2, (130, 150))
    return root


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
            "--config.predict.label_format=ids",
            "--config.predict.polygons=True",
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
            "stage1_figure.png",
            "final_figure.png",
        ):
            img = cv2.imread(str(folder / f))
            assert img is not None, f
        assert cv2.imread(str(folder / "stage0_64x64_overlay.png")).shape == (130, 150, 3)
        # label_format=ids: the last stage at the input size; DeepGlobe has no id table: its train ids
        ids = cv2.imread(str(folder / f"{name}_ids.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, cv2.resize(preds["stage2"], (150, 130), interpolation=cv2.INTER_NEAREST))
        polygons = json.loads((folder / "labels.geojson").read_text())["features"]
        assert polygons and {p["properties"]["class_id"] for p in polygons} <= set(np.unique(preds["stage2"]).tolist())
        assert not (folder / "labels.tif").exists()  # a PNG input in memory: no label TIFF
    summary = json.loads((out / "predict_summary.json").read_text())
    assert len(summary["images"]) == 2


@pytest.mark.slow
def test_predict_skips_bad_images_and_reports_them(assets, tmp_path):
    """A folder with one truncated JPEG in the middle: the others are predicted, the bad one is named,
    listed in the summary, and the exit status is 1."""
    from magnet_jax.inference.outputs import expand_images

    imgs = tmp_path / "mixed"
    imgs.mkdir()
    good = cv2.imread(str(assets / "imgs" / "im0.png"))
    cv2.imwrite(str(imgs / "a.jpg"), good)
    data = cv2.imencode(".jpg", good)[1].tobytes()
    (imgs / "b.jpg").write_bytes(data[: len(data) // 3])  # cut to a third: OpenCV would decode grey fill
    cv2.imwrite(str(imgs / "c.png"), good)
    out = tmp_path / "out"
    proc = _main(
        ["--config", str(REPO / "configs" / "deepglobe.py"), "--mode=predict", "--image", str(imgs),
         "--workdir", str(out), f"--config.checkpoint.backbone={assets / 'backbone'}",
         f"--config.checkpoint.refiners={assets / 'refiner'}", "--config.magnet.scales=64-64,128-128", *SMALL],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "skipped: cannot read image" in proc.stdout and "b.jpg: truncated JPEG" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("main.py: error: 1 of 3 images could not be read: b.jpg")
    summary = json.loads((out / "predict_summary.json").read_text())
    assert [os.path.basename(i["image"]) for i in summary["images"]] == ["a.jpg", "c.png"]
    assert [os.path.basename(i["image"]) for i in summary["skipped"]] == ["b.jpg"]
    assert (out / "c" / "predictions.npz").is_file() and not (out / "b").exists()

    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_images([str(tmp_path / "missing.png")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_images([str(tmp_path / "*.tif")])
    assert len(expand_images([str(assets / "imgs"), str(assets / "imgs" / "im0.png")])) == 2  # deduplicated


def test_evaluate_on_tiny_deepglobe_list(assets, tmp_path):
    from configs.deepglobe import get_config
    from magnet_jax.commands.checks import check_config
    from magnet_jax.commands.evaluate import run_evaluate

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
    check_config(c, "evaluate")
    work = tmp_path / "work"
    res = run_evaluate(c, str(work))
    saved = json.loads((work / "results.json").read_text())
    assert saved["num_images"] == 2 and saved["miou_classes"] == [1, 2, 3, 4, 5, 6]
    assert np.array(saved["confusion"]["refined"]).sum() == 2 * 140 * 120
    assert res["miou"]["coarse"] == pytest.approx(np.mean(np.array(res["iou"]["coarse"])[1:]))
    assert saved["protocol"]["classes_averaged"] == [1, 2, 3, 4, 5, 6] and saved["protocol"]["metric"] == "miou"
    assert saved["protocol"]["list_sha256"]  # the split's list file is named by its checksum
    assert len(saved["miou"]["stages"]) == 3 and saved["compute"]["gflops"] > 0
    assert len(list((work / "pictures").glob("*.png"))) == 2


@pytest.mark.slow
def test_predict_streamed_equals_in_memory(assets, tmp_path):
    """`--config.magnet.streamed=on`: the tiled label TIFF equals the in-memory prediction at the last scale."""
    import tifffile

    common = ["--config", str(REPO / "configs" / "deepglobe.py"), "--mode=predict",
              "--image", str(assets / "imgs" / "im0.png"), f"--config.checkpoint.backbone={assets / 'backbone'}",
              f"--config.checkpoint.refiners={assets / 'refiner'}", "--config.magnet.scales=64-64,128-128,256-256",
              "--config.magnet.n_patches=2", *SMALL]  # fmt: skip
    for mode in ("on", "off"):
        proc = _main([*common, "--workdir", str(tmp_path / mode), f"--config.magnet.streamed={mode}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    streamed = tifffile.imread(tmp_path / "on" / "im0" / "labels.tif")
    in_memory = np.load(tmp_path / "off" / "im0" / "predictions.npz")["stage2"]
    assert streamed.shape == in_memory.shape == (256, 256)
    np.testing.assert_array_equal(streamed, in_memory)
