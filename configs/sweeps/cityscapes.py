"""The MagNet paper's Cityscapes ablations on the official checkpoints (converted or .pth).

    python main.py --config configs/sweeps/cityscapes.py --mode=sweep --workdir runs/cs_sweep \
        --config.checkpoint.backbone=checkpoints/cityscapes_hrnet.pth \
        --config.checkpoint.refiners=checkpoints/cityscapes_refinement_512.pth,checkpoints/cityscapes_refinement_1024.pth,checkpoints/cityscapes_refinement_2048.pth

Axes (paper Tables 4-6): points per stage, MagNet vs MagNet-Fast (3 patches, all points of them:
published 67.37 vs 68.20), the smoothing kernel, and the number of stages (the first refiners;
scales 256x128 -> 512x256 -> 1024x512 -> 2048x1024). compat=reference, as the published numbers.
"""

from pathlib import Path

from magnet_jax.config import load_config_file

BASE = Path(__file__).resolve().parents[1] / "cityscapes.py"


def get_config(arg: str | None = None):
    c = load_config_file(BASE, arg)
    c.magnet.compat = "reference"
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    return [
        {"name": "MagNet"},
        {"name": "MagNet-Fast", "magnet.n_patches": 3, "magnet.n_points": 1.0},
        {"magnet.n_points": 50000.0},
        {"magnet.n_points": 20000.0},
        {"magnet.smooth_kernel": 1},
        {"magnet.smooth_kernel": 11},
        {"name": "2 stages", "magnet.scales": "256-128,512-256"},
        {"name": "3 stages", "magnet.scales": "256-128,512-256,1024-512"},
    ]
