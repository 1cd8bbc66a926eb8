"""DeepGlobe land cover, ResNet50-FPN, scales 612 -> 1224 -> 2448, one refiner shared by all stages.

    # evaluate the official checkpoints (published, compat=reference: coarse 67.22 -> MagNet 72.10 mIoU)
    python main.py --config configs/deepglobe.py --mode=evaluate --workdir runs/dg_eval \
      --config.magnet.compat=reference --config.checkpoint.backbone=checkpoints/deepglobe_fpn.pth \
      --config.checkpoint.refiners=checkpoints/deepglobe_refinement.pth
    # MagNet-Fast (published 68.22): the same with --config configs/deepglobe.py:fast
    # train a backbone, then the shared refiner
    python main.py --config configs/deepglobe.py --workdir runs/dg --config.train.target=backbone
    python main.py --config configs/deepglobe.py --workdir runs/dg

Data: `python data/prepare_deepglobe.py` with the standard split (454 / 207 / 142 of land-train, shipped in
data/list/deepglobe), RGB masks, mIoU over classes 1..6 (class 0 unknown not averaged): the registry's
defaults (magnet_jax/data/datasets/deepglobe.py). Evaluation on the test split.
`:fast`: MagNet-Fast, 3 patches per stage, 0.9 of their points, median 11.
"""

from magnet_jax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.data.name = "deepglobe"
    c.data.root = "data/deepglobe"
    c.data.train_list = "data/list/deepglobe/train.txt"
    c.data.val_list = "data/list/deepglobe/val.txt"
    c.data.test_list = "data/list/deepglobe/test.txt"
    c.data.eval_split = "test"
    c.data.num_classes = 7
    c.model.backbone = "fpn"
    c.magnet.scales = "612-612,1224-1224,2448-2448"
    c.magnet.crop_size = "612-612"
    c.magnet.input_size = "508-508"
    c.magnet.n_points = 1.0
    c.magnet.smooth_kernel = 17
    c.train.shared_refiner = True
    c.train.backbone_scale_jitter = ""  # the original used no jitter for DeepGlobe
    c.train.backbone_crop_sizes = "612-612,1224-1224,2448-2448"
    if arg == "fast":
        c.magnet.n_patches = 3
        c.magnet.n_points = 0.9
        c.magnet.smooth_kernel = 11
    elif arg:
        raise ValueError(f"configs/deepglobe.py: unknown variant {arg!r}; expected '' or 'fast'")
    return c
