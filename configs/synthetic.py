"""The synthetic main job: generate data, train a small backbone and a refiner, evaluate held-out images.

    python main.py --config configs/synthetic.py --workdir runs/synthetic          # the main job
    python main.py --config configs/synthetic.py:smoke --workdir runs/smoke  # the same path in ~1 min (CI)

Main job: generates the dataset (`magnet_jax/data/synthetic.py`: 1024x1024 images, 5 classes; 128
train, 8 val, 16 test) into `runs/synthetic/synthetic_data`, trains the `small` backbone (poly LR) and
one refinement module shared by the four refinement stages (MultiStepLR, OHEM, as the original; both
with Adam instead of the original's SGD, see below), then evaluates the test split and writes
`runs/synthetic/results.json` with the mIoU of
- coarse: the backbone on the whole image at 64x64 (stage 0),
- patch: the backbone on the 64x64 patches of the finest scale (1024x1024), stitched, no refinement,
- MagNet: 64 -> 128 -> 256 -> 512 -> 1024 (all patches, all points),
prints the per-class table and saves pictures (image | truth | coarse | patch | MagNet) in
`runs/synthetic/pictures/`. Everything is seeded; the test split plays no part in training or model
selection. Rerunning the command resumes / skips finished phases.
Expected (2-core CPU, ~7 min): coarse 67.97, patch 82.73, MagNet 98.56 mIoU (`--config.seed=1`:
68.63 / 83.00 / 98.59).

Each view misses something by construction of the data: 2-px textures (classes 1/2) vanish at
scales <= 256, and the two big-shape classes (3/4) differ only in a halo at their border, which a
finest-scale patch inside a shape never sees.

`:smoke`: the same code path (generate -> backbone with validation -> refiner with validation and
precise BN -> three-way evaluation) on 256x256 images, scales 64 -> 128 -> 256, a few steps each; it
checks that everything runs, not what it learns (CI runs it: `tests/test_smoke.py`).
"""

from magnet_jax.config import default_config


def get_config(arg: str | None = None):
    c = default_config()
    c.data.name = "synthetic"
    c.data.source = "synthetic"
    c.data.root = ""  # generated into <workdir>/synthetic_data
    c.data.num_classes = 5
    c.data.eval_split = "test"
    c.data.num_workers = 0  # the 2-core CPU this job targets is better used by XLA
    c.data.synthetic.num_train = 128

    c.model.backbone = "small"

    c.magnet.scales = "64-64,128-128,256-256,512-512,1024-1024"
    c.magnet.crop_size = "64-64"
    c.magnet.input_size = "64-64"
    c.magnet.n_points = 1.0
    c.magnet.patch_batch_size = 16

    c.train.target = "all"  # backbone, then the refiner, then results.json
    c.train.shared_refiner = True
    c.train.batch_size = 8
    # refiner phase
    c.train.epochs = 15
    # Adam (same coupled weight decay) instead of the original's SGD, here and for the backbone: with a
    # few hundred steps from scratch, SGD learnt the texture cues for some seeds and not for others
    # (seen on the val split); Adam did for every seed tried.
    c.train.optimizer = "adam"
    c.train.lr_schedule = "multistep"
    c.train.lr_milestones = "10,13"
    c.train.ohem_min_kept = 5000  # ~15% of the pixels of a batch of 8 at 64x64
    c.train.precise_bn_batches = 8  # short run: re-estimate the BatchNorm statistics at the end
    c.train.eval_every_epochs = 15  # validate once, at the end of the run
    c.train.eval_max_images = 8
    c.train.checkpoint_every_steps = 50
    c.train.log_every_steps = 5
    # backbone phase (overrides of c.train.* for it)
    # 90 epochs (720 -> 1440 steps): at 45, seed 1 learnt the 2-px textures only partly (refiner val mIoU
    # 67.6 vs 94.5 at 90 epochs; seed 0 was fine either way).
    c.train.backbone_phase.epochs = 90
    c.train.backbone_phase.optimizer = "adam"
    c.train.backbone_phase.lr = 0.002
    c.train.backbone_phase.lr_schedule = "poly"
    c.train.backbone_phase.eval_every_epochs = 90
    # The backbone learns from the views MagNet shows it: the image resized to a scale of
    # c.magnet.scales (64 to 1024), then a 64x64 crop. (The original's recipe, a crop resized
    # to the input, averages away the 2-px textures whenever the crop starts at an odd pixel.)
    c.train.backbone_sampling = "scales"
    c.train.backbone_scale_jitter = ""

    c.eval.save_pictures = True
    c.eval.num_pictures = 4
    if arg == "smoke":
        _smoke(c)
    elif arg:
        raise ValueError(f"configs/synthetic.py: unknown variant {arg!r}; expected '' (the main job) or 'smoke'")
    return c


def _smoke(c) -> None:
    """Tiny data and a few steps per phase; validation and precise BN stay on (they are the path under test)."""
    c.data.synthetic.size = 256
    c.data.synthetic.num_train = 16
    c.data.synthetic.num_val = 2
    c.data.synthetic.num_test = 2
    c.magnet.scales = "64-64,128-128,256-256"
    c.train.epochs = 2  # 2 steps per epoch
    c.train.lr_milestones = "1"
    c.train.ohem_min_kept = 2000
    c.train.precise_bn_batches = 2
    c.train.eval_every_epochs = 2
    c.train.eval_max_images = 2
    c.train.checkpoint_every_steps = 2
    c.train.log_every_steps = 1
    c.train.backbone_phase.epochs = 2
    c.train.backbone_phase.eval_every_epochs = 2
    c.eval.num_pictures = 1
