"""A tiny synthetic training run for the resume tests: 64x64 images, 4 training images, 2 scales.

    python main.py --config tests/configs/tiny.py --workdir W --config.data.root=DATA
"""

from magnet_jax.config import default_config


def get_config():
    c = default_config()
    c.seed = 3
    c.data.name = "synthetic"
    c.data.source = "synthetic"
    c.data.num_classes = 5
    c.data.num_workers = 0
    c.data.eval_split = "test"
    c.data.synthetic.size = 64
    c.data.synthetic.num_train = 4
    c.data.synthetic.num_val = 1
    c.data.synthetic.num_test = 1
    c.model.backbone = "small"
    c.magnet.scales = "32-32,64-64"
    c.magnet.crop_size = "32-32"
    c.magnet.input_size = "32-32"
    c.train.target = "backbone"
    c.train.batch_size = 2
    c.train.epochs = 4
    c.train.lr = 0.01
    c.train.shared_refiner = True
    c.train.ohem_min_kept = 500
    c.train.backbone_crop_sizes = "64-64,32-32"
    c.train.backbone_scale_jitter = ""
    c.train.eval_every_epochs = 0
    c.train.checkpoint_every_steps = 2
    c.train.log_every_steps = 1
    c.train.progress = False
    return c
