"""DeepGlobe land cover, ResNet50-FPN, scales 612 -> 2448, one refiner shared by all stages.

MagNet-Fast: --config.magnet.n_patches=3 --config.magnet.n_points=0.9 --config.magnet.smooth_kernel=11
"""

from magnet_jax.config import default_config


def get_config():
    c = default_config()
    c.data.name = "deepglobe"
    c.data.root = "data/deepglobe"
    c.data.train_list = "data/list/deepglobe/train.txt"
    c.data.val_list = "data/list/deepglobe/val.txt"
    c.data.test_list = "data/list/deepglobe/test.txt"
    c.data.eval_split = "test"
    c.data.num_classes = 7
    c.data.ignore_label = 255
    c.data.label_format = "deepglobe_rgb"
    c.data.miou_classes = "1,2,3,4,5,6"  # class 0 (unknown) is not averaged
    c.model.backbone = "fpn"
    c.magnet.scales = "612-612,1224-1224,2448-2448"
    c.magnet.crop_size = "612-612"
    c.magnet.input_size = "508-508"
    c.magnet.n_points = 1.0
    c.magnet.n_patches = -1
    c.magnet.smooth_kernel = 17
    c.train.shared_refiner = True
    c.train.backbone_scale_jitter = ""  # the original used no jitter for DeepGlobe
    c.train.backbone_crop_sizes = "612-612,1224-1224,2448-2448"
    return c
