"""Gleason 2019 (prostate TMA cores), PSPNet, four scales 625 -> 5000, one refiner shared by all stages.

    python data/prepare_gleason.py --download data/gleason2019 --root data/gleason
    python main.py --config configs/gleason.py --workdir runs/gleason --config.checkpoint.backbone=...

Data: the original MagNet's 195 train / 49 val cores (data/list/gleason, no test split: evaluation on
val), labels fused from the pathologists' maps by majority vote (data/prepare_gleason.py), 5 classes
(background, benign, Gleason 3, 4, 5). Metric as the original's: frequency-weighted IoU over classes
1..4 (`fwiou`, its get_freq_iou), with the mIoU over the same classes printed too.
Settings from the original's scripts/gleason (PSPNet, scales 625-625,...,5000-5000, crop 625, input
625, all patches) with n_points 1.0 and smooth kernel 11; the original's test script at commit
0063361 used input 512, n_points 0.5, smooth 1: --config.magnet.input_size=512-512
--config.magnet.n_points=0.5 --config.magnet.smooth_kernel=1 reproduces that run.
Expected numbers: the paper's Gleason table was not found (data/README.md); none are claimed here.
"""

from magnet_jax.config import default_config


def get_config(arg: str | None = None):
    del arg
    c = default_config()
    c.data.name = "gleason"
    c.data.root = "data/gleason"
    c.data.train_list = "data/list/gleason/train.txt"
    c.data.val_list = "data/list/gleason/val.txt"
    c.data.test_list = "data/list/gleason/val.txt"  # the original has no test split
    c.data.num_classes = 5
    c.data.metric = "fwiou"  # the dataset's default, stated: the original's get_freq_iou over classes 1..4
    c.model.backbone = "psp"
    c.magnet.scales = "625-625,1250-1250,2500-2500,5000-5000"
    c.magnet.crop_size = "625-625"
    c.magnet.input_size = "625-625"
    c.magnet.n_points = 1.0
    c.magnet.smooth_kernel = 11
    c.train.shared_refiner = True
    return c
