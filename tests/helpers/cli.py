"""The command-line tests' tools: `main.py` run as a user runs it, random weights and images to hand it, and
what they compare (a folder's content hash, the one-line refusal of `main.py`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from helpers.shared import REPO


def tree_hash(root: Path) -> str:
    """sha256 over every file's relative path and bytes under `root`."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def one_line_error(proc, status: int = 2) -> str:
    """The refusal: the given exit status, no traceback, and its last stderr line `main.py: error: ...`."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("main.py: error: "), proc.stderr[-3000:]
    return last


def run_main(args: list[str], cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in a subprocess, as a user runs it; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(REPO / "main.py"), *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def save_random_weights(root: Path, backbone: str, num_classes: int) -> Path:
    """A randomly initialised `backbone` (seed 0) and `refinement` (seed 1) saved as `root/backbone` and
    `root/refiner`, for `--config.checkpoint.backbone` / `--config.checkpoint.refiners`; returns `root`."""
    from magnet_jax.models import build_model
    from magnet_jax.weights import save_model_weights

    save_model_weights(build_model(backbone, num_classes), root / "backbone", model_name=backbone,
                       num_classes=num_classes)  # fmt: skip
    save_model_weights(build_model("refinement", num_classes, seed=1), root / "refiner", model_name="refinement",
                       num_classes=num_classes)  # fmt: skip
    return root


def weight_flags(root: Path) -> list[str]:
    """The `--config.checkpoint.*` flags of the weights `save_random_weights` wrote under `root`."""
    return [f"--config.checkpoint.backbone={root / 'backbone'}", f"--config.checkpoint.refiners={root / 'refiner'}"]


def write_random_images(folder: Path, n: int, hw: tuple[int, int], seed: int = 0) -> Path:
    """`n` random uint8 RGB PNGs `im0.png` ... of size `hw` (H, W) in `folder` (created); returns `folder`."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 255, (*hw, 3), dtype=np.uint8))
    return folder
