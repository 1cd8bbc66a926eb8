"""Cityscapes, HRNet-W18-small-v2 + OCR, four scales 256x128 -> 2048x1024 (the original's setting).

MagNet-Fast: --config.magnet.n_patches=3 --config.magnet.n_points=1.0
"""

from magnet_jax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "cityscapes"
    c.data.root = "data/cityscapes"
    c.data.train_list = "data/list/cityscapes/train.txt"
    c.data.val_list = "data/list/cityscapes/val.txt"
    c.data.test_list = "data/list/cityscapes/test.txt"
    c.data.num_classes = 19
    c.data.label_format = "cityscapes_label_ids"
    c.model.backbone = "hrnet18+ocr"
    c.magnet.scales = "256-128,512-256,1024-512,2048-1024"
    c.magnet.crop_size = "256-128"
    c.magnet.input_size = "256-128"
    c.magnet.n_points = 100000.0
    c.magnet.n_patches = -1
    c.magnet.smooth_kernel = 5
    c.train.shared_refiner = False
    return c
