"""Cityscapes, HRNet-W18-small-v2 + OCR, four scales 256x128 -> 2048x1024, one refiner per stage.

The schema's defaults (magnet_jax/config.py) are the original's Cityscapes settings; this file names
the dataset and what MagNet-Fast changes.

    # evaluate the official checkpoints (published, compat=reference: coarse 63.24 -> MagNet 68.20 mIoU)
    python main.py --config configs/cityscapes.py --mode=evaluate --workdir runs/cs_eval \
      --config.magnet.compat=reference --config.checkpoint.backbone=checkpoints/cityscapes_hrnet.pth \
      --config.checkpoint.refiners=checkpoints/cityscapes_refinement_512.pth,checkpoints/cityscapes_refinement_1024.pth,checkpoints/cityscapes_refinement_2048.pth
    # MagNet-Fast (published 67.37): the same with --config configs/cityscapes.py:fast
    # train the refiners on a frozen backbone (one run per stage)
    python main.py --config configs/cityscapes.py --workdir runs/cs_refiner \
      --config.checkpoint.backbone=checkpoints/cityscapes_hrnet.pth

Data: `python data/prepare_cityscapes.py` (data/README.md); 2975 train / 500 val, mIoU over 19 classes.
`:fast`: MagNet-Fast, 3 patches per stage with all of their points.
"""

from magnet_jax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.data.name = "cityscapes"  # labelIds -> 19 train ids, mIoU over all (magnet_jax/data/datasets/cityscapes.py)
    if arg == "fast":
        c.magnet.n_patches = 3
        c.magnet.n_points = 1.0
    elif arg:
        raise ValueError(f"configs/cityscapes.py: unknown variant {arg!r}; expected '' or 'fast'")
    return c
