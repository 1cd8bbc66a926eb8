"""Two sweep points on `tests/configs/tiny.py` (one 64x64 test image): the sweep.jsonl resume tests.

    python main.py --config tests/configs/tiny_sweep.py --mode=sweep --workdir W --config.data.root=DATA \
        --config.checkpoint.backbone=BACKBONE --config.checkpoint.refiners=REFINER
"""

from pathlib import Path

from magnet_jax.config import load_config_file


def get_config():
    c = load_config_file(Path(__file__).resolve().parent / "tiny.py")
    c.eval.save_pictures = False
    return c


def get_sweep() -> list[dict]:
    return [{}, {"magnet.n_points": 0.25}]
