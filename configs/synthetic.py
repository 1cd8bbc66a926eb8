"""The synthetic demo: generate data, train a small backbone and a refiner, evaluate held-out images.

    python main.py --config configs/synthetic.py --workdir runs/synthetic

Writes `runs/synthetic/results.json` with the mIoU of the coarse prediction (whole image at
128x128), of the backbone on the 128x128 patches of the finest scale (no refinement) and of
MagNet (128 -> 256 -> 512, one shared refinement module), prints the table and saves
prediction pictures in `runs/synthetic/pictures/`. Everything is seeded; hyper-parameters were
chosen on the validation split only, the test split is evaluated once at the end.

The dataset (`magnet_jax/data/synthetic.py`, 512x512 here) is built so that each view misses
something: pixel-level textures (classes 1/2) vanish at the coarse scale, and the two big-shape
classes (3/4) differ only at their border, which a finest-scale patch inside a shape never sees.
"""

from magnet_jax.config import default_config


def get_config():
    c = default_config()
    c.seed = 0

    c.data.name = "synthetic"
    c.data.source = "synthetic"
    c.data.root = ""  # generated into <workdir>/synthetic_data
    c.data.num_classes = 5
    c.data.ignore_label = 255
    c.data.eval_split = "test"
    c.data.miou_classes = ""  # all 5 classes
    c.data.num_workers = 0  # the 2-core CPU this demo targets is better used by XLA
    c.data.synthetic.size = 512
    c.data.synthetic.num_train = 48
    c.data.synthetic.num_val = 8
    c.data.synthetic.num_test = 16
    c.data.synthetic.seed = 1234

    c.model.backbone = "small"

    c.magnet.scales = "128-128,256-256,512-512"
    c.magnet.crop_size = "128-128"
    c.magnet.input_size = "128-128"
    c.magnet.n_patches = -1
    c.magnet.n_points = 1.0
    c.magnet.smooth_kernel = 5
    c.magnet.patch_batch_size = 16

    c.train.target = "all"  # backbone, then the refiner, then results.json
    c.train.shared_refiner = True
    c.train.refiner_input_order = "fine_first"
    c.train.batch_size = 8
    # refiner phase
    c.train.epochs = 12
    c.train.lr = 0.02
    c.train.lr_schedule = "multistep"
    c.train.lr_milestones = "8,11"
    c.train.ohem_min_kept = 20000  # ~15% of the pixels of a batch of 8 at 128x128
    c.train.eval_every_epochs = 12  # validate once, at the end of the run
    c.train.eval_max_images = 8
    c.train.checkpoint_every_steps = 50
    c.train.log_every_steps = 5
    # backbone phase (overrides of c.train.* for it)
    c.train.backbone_phase.epochs = 40
    c.train.backbone_phase.lr = 0.05
    c.train.backbone_phase.lr_schedule = "poly"
    c.train.backbone_phase.eval_every_epochs = 40
    # The backbone learns from the views MagNet shows it: the image resized to a scale of
    # c.magnet.scales (128, 256 or 512), then a 128x128 crop. (The original's recipe, a crop resized
    # to the input, averages away the 2-px textures whenever the crop starts at an odd pixel.)
    c.train.backbone_sampling = "scales"
    c.train.backbone_scale_jitter = ""

    c.eval.save_pictures = True
    c.eval.num_pictures = 4
    return c
