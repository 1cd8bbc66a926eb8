"""The MagNet paper's ablations on the synthetic main job's trained weights (no download).

    python main.py --config configs/synthetic.py --workdir runs/synthetic       # the main job, first
    python main.py --config configs/sweeps/synthetic.py --mode=sweep --workdir runs/sweep \
        --config.checkpoint.backbone=runs/synthetic/weights/backbone \
        --config.checkpoint.refiners=runs/synthetic/weights/refiner

Axes (paper section 5.3), 8 points: points refined per stage (n_points 1, 0.5, 0.05), patches refined
per stage (MagNet: all; MagNet-Fast: 16 per stage), number of stages (2, 3, 5 of the scales 64..1024;
the shared refiner serves any), and the median kernel of the error score (1, 5, 11). The 16 test
images of the main job (the same seed, generated into runs/sweep/synthetic_data: a sweep writes only
under its --workdir, whatever the current folder); writes runs/sweep/{sweep.jsonl,sweep.md,sweep.png}.
`--mode=evaluate` on this file evaluates the base point (the main job's MagNet).

`:smoke`: 3 points on `configs/synthetic.py:smoke`'s data and weights (CI: `tests/test_sweep.py`).
"""

from pathlib import Path

from magnet_jax.config import load_config_file

BASE = Path(__file__).resolve().parents[1] / "synthetic.py"


def get_config(arg: str | None = None):
    c = load_config_file(BASE, arg)
    c.eval.save_pictures = False  # data: the main job's images (same seed), generated into WORKDIR/synthetic_data
    return c


def get_sweep(arg: str | None = None) -> list[dict]:
    if arg == "smoke":
        return [{}, {"magnet.n_points": 0.25}, {"name": "2 stages", "magnet.scales": "64-64,256-256"}]
    if arg:
        raise ValueError(f"configs/sweeps/synthetic.py: unknown variant {arg!r}; expected '' or 'smoke'")
    return [
        {"name": "MagNet"},
        {"magnet.n_points": 0.5},
        {"magnet.n_points": 0.05},
        {"name": "MagNet-Fast", "magnet.n_patches": 16},
        {"name": "2 stages", "magnet.scales": "64-64,1024-1024"},
        {"name": "3 stages", "magnet.scales": "64-64,256-256,1024-1024"},
        {"magnet.smooth_kernel": 1},
        {"magnet.smooth_kernel": 11},
    ]
