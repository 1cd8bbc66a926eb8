"""The MagNet paper's DeepGlobe ablations on the official checkpoints (converted or .pth).

    python main.py --config configs/sweeps/deepglobe.py --mode=sweep --workdir runs/dg_sweep \
        --config.checkpoint.backbone=checkpoints/deepglobe_fpn.pth \
        --config.checkpoint.refiners=checkpoints/deepglobe_refinement.pth

Axes (paper Tables 2-3, 5): the number of scales (2..4 between 612 and 2448, one shared refiner),
points per stage, MagNet vs MagNet-Fast (3 patches, 0.9 of their points, median 11: published 68.22
vs 72.10), the smoothing kernel. compat=reference, as the published numbers.
"""

from pathlib import Path

from magnet_jax.config import load_config_file

BASE = Path(__file__).resolve().parents[1] / "deepglobe.py"


def get_config(arg: str | None = None):
    c = load_config_file(BASE, arg)
    c.magnet.compat = "reference"
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    return [
        {"name": "MagNet"},
        {"name": "MagNet-Fast", "magnet.n_patches": 3, "magnet.n_points": 0.9, "magnet.smooth_kernel": 11},
        {"magnet.n_points": 0.5},
        {"magnet.n_points": 0.2},
        {"magnet.smooth_kernel": 5},
        {"magnet.smooth_kernel": 11},
        {"name": "2 scales", "magnet.scales": "612-612,2448-2448"},
        {"name": "4 scales", "magnet.scales": "612-612,1224-1224,1836-1836,2448-2448"},
    ]
