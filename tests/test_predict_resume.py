"""`--mode=predict` on a folder, killed mid-folder and rerun: complete images are skipped and said so, the
others (and any image whose config changed) are predicted, the summary lists every image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import save_random_weights, weight_flags, write_random_images
from helpers.shared import REPO

N = 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random `small` backbone and refiner (5 classes) and N 96x96 images under imgs/."""
    root = save_random_weights(tmp_path_factory.mktemp("resume"), "small", 5)
    write_random_images(root / "imgs", N, (96, 96))
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "main.py"), "--config", str(REPO / "tests" / "configs" / "tiny.py"),
        "--mode=predict", "--image", str(root / "imgs"), "--workdir", str(out),
        *weight_flags(root),
        "--config.magnet.scales=48-48,96-96", *extra,
    ]  # fmt: skip


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_killed_folder_rerun_skips_complete_images(folder, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(folder, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=_env())  # fmt: skip
    for line in proc.stdout:
        if line.startswith("im1.png:"):  # two images done: kill before the rest
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=600)
    complete = sorted(p.parent.name for p in out.glob("*/.magnet_complete.json"))
    assert complete[:2] == ["im0", "im1"] and len(complete) < N, complete  # killed mid-folder
    assert not (out / "predict_summary.json").exists()  # written last
    stamps = {name: (out / name / "predictions.npz").stat().st_mtime_ns for name in complete}

    rerun = subprocess.run(_args(folder, out), capture_output=True, text=True, env=_env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name in complete:
        assert f"{name}.png: complete in an earlier run, skipped ({out / name})" in rerun.stdout
        assert (out / name / "predictions.npz").stat().st_mtime_ns == stamps[name]  # not rewritten
    summary = json.loads((out / "predict_summary.json").read_text())
    assert [Path(e["image"]).name for e in summary["images"]] == [f"im{i}.png" for i in range(N)]
    assert [bool(e.get("complete_before")) for e in summary["images"]] == [i < len(complete) for i in range(N)]
    assert all("seconds" in e and "points" in e for e in summary["images"])
    assert len(list(out.glob("*/.magnet_complete.json"))) == N

    # another config: nothing is skipped, each image says why it runs again
    changed = subprocess.run(_args(folder, out, "--config.magnet.n_points=0.25"), capture_output=True, text=True,
                             env=_env(), timeout=600)  # fmt: skip
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "skipped" not in changed.stdout
    assert "im0.png: predicted again: the config changed (magnet.n_points: 100000.0 -> 0.25)" in changed.stdout


@pytest.mark.slow
def test_whole_image_resize_refused_before_any_image(folder, tmp_path):
    """A 20000 px TIFF (sparse: only its header is read) at a scale that is no power-of-two fraction of it
    would be resized whole in memory (1.2 GB + the scale) above a 1024 MB budget: one line, exit status 2."""
    import tifffile

    big = tmp_path / "imgs" / "big.tif"
    big.parent.mkdir()
    mm = tifffile.memmap(big, shape=(20000, 20000, 3), dtype=np.uint8, bigtiff=True)
    del mm
    args = _args(folder, tmp_path / "out", "--config.magnet.streamed=on", "--config.magnet.memory_budget_mb=1024",
                 "--config.magnet.scales=625-625,1250-1250,15000-15000")  # fmt: skip
    args[args.index("--image") + 1] = str(big)
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("main.py: error: config.magnet.scales: scale 15000-15000 is not a power-of-two fraction "
                           f"of the 20000x20000 image {big}, so it needs the whole image resized")  # fmt: skip
    assert "(1788 MB > config.magnet.memory_budget_mb=1024)" in last
    assert "(here: 20000-20000, 10000-10000, 5000-5000, 2500-2500, 1250-1250, 625-625" in last
    assert not (tmp_path / "out" / "big").exists()  # refused before any image ran
