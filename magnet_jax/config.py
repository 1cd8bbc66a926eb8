"""The configuration schema shared by `configs/*.py`, and its validation.

Config files start from `default_config()` and override fields; `main.py` calls
`validate_config` before any work, so a config that contradicts itself fails
with the offending field named. Sizes use the original's notation `W-H`.
"""

from __future__ import annotations

import ml_collections

from magnet_jax.field_checks import (
    COMPAT_MODES,
    CONV_ALGORITHMS,
    DTYPES,
    STORE_DTYPES,
    STREAM_MODES,
    check_at_least,
    check_choice,
    check_integer_at_least,
    check_num_workers,
    check_scales,
    check_size,
    check_streamed_compat,
)


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # --- data (magnet_jax.data) ---
    c.data = ml_collections.ConfigDict()
    c.data.name = "cityscapes"  # magnet_jax.data.DATASET_NAMES: cityscapes deepglobe gleason inria synthetic custom
    c.data.source = "file_list"  # file_list | tfds | synthetic
    c.data.root = "data/cityscapes"  # image/label paths in the lists are relative to it
    c.data.train_list = "data/list/cityscapes/train.txt"
    c.data.val_list = "data/list/cityscapes/val.txt"
    c.data.test_list = "data/list/cityscapes/test.txt"
    c.data.eval_split = "val"  # train | val | test
    c.data.num_classes = 19
    c.data.ignore_label = 255
    # Label decoding: cityscapes_label_ids | deepglobe_rgb | color_table | id_table | train_ids | mask_0_255;
    # empty = the dataset's own (custom: color_table / id_table when given, else train_ids)
    c.data.label_format = ""
    c.data.color_table = ""  # custom: "R,G,B;R,G,B;..." one entry per class, in class order
    c.data.id_table = ""  # custom: "raw_id:class,raw_id:class,..."; unlisted ids -> ignore
    c.data.binarize_masks = False  # DeepGlobe challenge: threshold RGB masks at 128 first
    c.data.miou_classes = ""  # classes averaged into mIoU, "1,2,3"; empty = the dataset's (DeepGlobe 1..6)
    c.data.metric = ""  # overall metric miou | fwiou | iou_class:K; empty = the dataset's (Gleason fwiou)
    c.data.class_names = ""  # comma-separated, for tables; empty = dataset default
    c.data.num_workers = 2
    c.data.tfds_data_dir = ""  # tfds source: where TFDS keeps prepared datasets
    c.data.tfds_manual_dir = ""  # tfds source: folder with the Cityscapes zips
    c.data.synthetic = ml_collections.ConfigDict()
    c.data.synthetic.num_train = 48
    c.data.synthetic.num_val = 8
    c.data.synthetic.num_test = 16
    c.data.synthetic.size = 1024
    c.data.synthetic.seed = 1234

    # --- models (magnet_jax.models) ---
    c.model = ml_collections.ConfigDict()
    c.model.backbone = "hrnet18+ocr"  # fpn | psp | hrnet18+ocr | hrnet48+ocr | small (magnet_jax.models)
    c.model.refiner = "refinement"  # the refiner of every stage (magnet_jax.models.REFINER_NAMES)

    # --- MagNet inference (magnet_jax.inference) ---
    c.magnet = ml_collections.ConfigDict()
    c.magnet.scales = "256-128,512-256,1024-512,2048-1024"
    c.magnet.crop_size = "256-128"
    c.magnet.input_size = "256-128"
    c.magnet.n_patches = -1  # -1: all patches (MagNet); k > 0: MagNet-Fast
    c.magnet.n_points = 100000.0  # > 1: a count of points; <= 1: a fraction of the pixels
    c.magnet.smooth_kernel = 5
    c.magnet.compat = "paper"  # paper (defects fixed) | reference (the original, defects included)
    c.magnet.patch_batch_size = 0  # patches per backbone call (one compiled shape); 0 = auto (CPU 1, GPU 8)
    c.magnet.dtype = "float32"  # model compute: float32 (parity) | bfloat16 (opt-in fast mode, mostly for GPUs)
    # 3x3 convolutions of inference and of refiner training's frozen backbone: auto (Winograd F(4x4,3x3)
    # on CPU where measured faster, else XLA's) | direct | winograd
    c.magnet.conv_algorithm = "auto"
    c.magnet.streamed = "auto"  # predict tile by tile, maps on disk: auto (a stage map > 1 GiB) | on | off
    c.magnet.tile_patches = 0  # streamed: a tile is tile_patches x tile_patches patches; 0: from memory_budget_mb
    c.magnet.input_pyramid = False  # streamed: resize scales from the input's nearest pyramid level (not parity)
    c.magnet.memory_budget_mb = 4096  # streamed: peak resident MB aimed at (sets tile_patches, refuses whole resizes)
    c.magnet.stream_dtype = "float32"  # streamed: stage maps on disk as float32 (exact) | float16 (half the I/O)

    # --- checkpoints to start from ---
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.backbone = ""  # original .pth or converted orbax checkpoint
    c.checkpoint.refiners = ""  # comma-separated: one per refinement stage, or one shared

    # --- training (magnet_jax.training) ---
    c.train = ml_collections.ConfigDict()
    c.train.target = "refiner"  # refiner | backbone
    c.train.epochs = 50
    c.train.batch_size = 8  # global batch, sharded over all devices
    c.train.lr = 1e-3
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4  # PyTorch-style: added to the gradient
    c.train.lr_milestones = "10,20,30,40,45"  # refiner: MultiStepLR epochs
    c.train.lr_gamma = 0.1
    c.train.poly_power = 0.9  # backbone: (1 - it / max_it) ** power
    c.train.aux_weight = 0.4
    c.train.ohem_thresh = 0.7
    c.train.ohem_min_kept = 100000
    c.train.refiner_input_order = "fine_first"  # fine_first (as inference) | coarse_first (original)
    c.train.shared_refiner = False  # one refiner for every stage (DeepGlobe) or one per stage
    c.train.backbone_crop_sizes = ""  # backbone: "W-H,..." random crops before resizing to input
    c.train.backbone_scale_jitter = "0.5,2.0"  # backbone: multi-scale jitter range
    c.train.max_steps = -1  # stop early (tests, smoke runs); -1 = epochs decide
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 200
    c.train.keep_checkpoints = 3
    c.train.eval_every_epochs = 5
    c.train.eval_max_images = -1
    c.train.stage = 0  # per-stage refiners: train only this stage (1-based); 0 = every stage in turn
    c.train.lr_schedule = "auto"  # auto (poly for backbones, multistep for refiners) | multistep | poly | constant
    c.train.refiner_loss = "ohem"  # ohem (the original) | ce
    c.train.backbone_loss = "ce"  # ce (the spec) | ohem (ohem_thresh / ohem_min_kept, on each head)
    c.train.optimizer = "sgd"  # sgd (the original: momentum, coupled weight decay) | adam (same decay)
    c.train.init_backbone = ""  # backbone training: start from these weights (.pth or converted folder)
    c.train.progress = True  # tqdm progress bar
    # backbone samples: crop (the original: a backbone_crop_sizes crop resized to the input, scale jitter) |
    c.train.backbone_sampling = "crop"  # scales (MagNet's views: image at a magnet.scales scale, crop_size crop)
    c.train.precise_bn_batches = 0  # > 0: re-estimate BatchNorm statistics on this many batches at the end
    c.train.fast_conv = True  # CPU only: fast convolution weight gradients (magnet_jax/ops/conv.py)
    # target "all" (synthetic demo): overrides of config.train.* for its backbone phase, e.g. epochs, lr
    c.train.backbone_phase = ml_collections.ConfigDict()

    # --- evaluation / prediction outputs ---
    c.eval = ml_collections.ConfigDict()
    c.eval.max_images = -1
    c.eval.save_pictures = False
    c.eval.num_pictures = 8
    c.eval.prefetch = 2  # input threads reading and preprocessing the next images while one computes (0: in turn)
    c.eval.batch_images = 1  # same-size images per compiled call; > 1 only pays on accelerators (benchmarks/gpu.sh)
    c.eval.process_timeout_s = 900.0  # several processes: how long to wait for the others' results before an error
    c.predict = ml_collections.ConfigDict()  # --mode=predict outputs (magnet_jax/rasters/label_outputs.py)
    c.predict.label_format = "none"  # none | ids: also <stem>_ids.png, input size, the dataset's label ids
    c.predict.progress = "auto"  # tiled runs: tiles done / total per stage on stderr: auto (a terminal) | on | off
    c.predict.reader = "auto"  # auto (OpenSlide for .svs/.ndpi/.mrxs/...) | tifffile | openslide (also tiled TIFFs)
    c.predict.tissue_mask = False  # tiled: refine only patches over tissue (Otsu), label the rest 255 (not predicted)
    c.predict.polygons = False  # also labels.geojson: class polygons (map coordinates for georeferenced inputs)
    return c


def parse_size(text: str, field: str) -> tuple[int, int]:
    """'W-H' (or a single 'S' for S-S) -> (W, H); errors name the config field."""
    parts = str(text).strip().split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"config.{field}: expected 'W-H' with integers, got {text!r}") from None
    return check_size(values * 2 if len(values) == 1 else values, field, text)


def parse_sizes(text: str, field: str) -> list[tuple[int, int]]:
    """'W-H,W-H,...' -> [(W, H), ...]."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"config.{field}: expected a comma-separated list of 'W-H', got {text!r}")
    return [parse_size(t, field) for t in items]


def parse_int_list(text: str, field: str) -> list[int]:
    items = [t for t in str(text).split(",") if t.strip()]
    try:
        return [int(t) for t in items]
    except ValueError:
        raise ValueError(f"config.{field}: expected comma-separated integers, got {text!r}") from None


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first contradictory or out-of-range field of the schema itself.

    Checks that need other layers (model names against the registry, the MagNet plan, the dataset's
    classes) are `magnet_jax.commands.checks.check_config`, which calls this first.
    """
    scales = parse_sizes(c.magnet.scales, "magnet.scales")
    check_scales(scales)
    crop = parse_size(c.magnet.crop_size, "magnet.crop_size")
    parse_size(c.magnet.input_size, "magnet.input_size")
    check_scales(scales, crop)
    if c.magnet.n_patches < -1:
        raise ValueError(f"config.magnet.n_patches: expected -1 (all) or >= 0, got {c.magnet.n_patches}")
    if c.magnet.n_points <= 0:
        raise ValueError(
            f"config.magnet.n_points: expected > 0 (count if > 1, fraction if <= 1), got {c.magnet.n_points}"
        )
    if c.magnet.smooth_kernel < 1:
        raise ValueError(f"config.magnet.smooth_kernel: expected >= 1, got {c.magnet.smooth_kernel}")
    check_choice(c.magnet.compat, COMPAT_MODES, "magnet.compat")
    if c.magnet.patch_batch_size < 0:
        raise ValueError(f"config.magnet.patch_batch_size: expected >= 1 (or 0: auto), got {c.magnet.patch_batch_size}")
    check_choice(c.magnet.dtype, DTYPES, "magnet.dtype")
    check_choice(c.magnet.get("conv_algorithm", "auto"), CONV_ALGORITHMS, "magnet.conv_algorithm")
    check_choice(c.magnet.streamed, STREAM_MODES, "magnet.streamed")
    check_streamed_compat(c.magnet.streamed, c.magnet.compat)
    if not c.eval.process_timeout_s > 0:
        raise ValueError(f"config.eval.process_timeout_s: expected seconds > 0, got {c.eval.process_timeout_s!r}")
    for section, name, low in (("magnet", "tile_patches", 0), ("magnet", "memory_budget_mb", 1024),
                               ("eval", "batch_images", 1), ("eval", "prefetch", 0)):  # fmt: skip
        check_integer_at_least(c[section][name], low, f"{section}.{name}")
    if c.eval.batch_images > 1 and c.magnet.streamed == "on":
        raise ValueError("config.eval.batch_images > 1 runs whole images: set config.magnet.streamed=off")
    for section, name in (("magnet", "input_pyramid"), ("predict", "tissue_mask")):
        if not isinstance(c[section][name], bool):
            raise ValueError(f"config.{section}.{name}: expected True or False, got {c[section][name]!r}")
    check_choice(c.magnet.stream_dtype, STORE_DTYPES, "magnet.stream_dtype")
    refiners = [p for p in str(c.checkpoint.refiners).split(",") if p.strip()]
    n_stages = len(scales) - 1
    if refiners and len(refiners) not in (1, n_stages):
        expected = (
            f"1 (shared) or {n_stages} (one per refinement stage)"
            if n_stages > 1
            else "1 (config.magnet.scales has one refinement stage)"
        )
        raise ValueError(
            f"config.checkpoint.refiners: {len(refiners)} files given for scales {c.magnet.scales!r}; "
            f"expected {expected}"
        )
    if c.data.num_classes < 1:
        raise ValueError(f"config.data.num_classes: expected >= 1, got {c.data.num_classes}")
    if c.train.target not in ("refiner", "backbone", "all"):
        raise ValueError(f"config.train.target: expected 'refiner', 'backbone' or 'all', got {c.train.target!r}")
    if c.train.lr_schedule not in ("auto", "multistep", "poly", "constant"):
        raise ValueError(
            f"config.train.lr_schedule: expected auto, multistep, poly or constant, got {c.train.lr_schedule!r}"
        )
    if c.train.backbone_sampling not in ("crop", "scales"):
        raise ValueError(
            f"config.train.backbone_sampling: expected 'crop' or 'scales', got {c.train.backbone_sampling!r}"
        )
    if c.train.refiner_loss not in ("ohem", "ce") or c.train.backbone_loss not in ("ohem", "ce"):
        raise ValueError(
            "config.train.refiner_loss / backbone_loss: expected 'ohem' or 'ce', got "
            f"{c.train.refiner_loss!r} / {c.train.backbone_loss!r}"
        )
    if c.train.optimizer not in ("sgd", "adam"):
        raise ValueError(f"config.train.optimizer: expected 'sgd' or 'adam', got {c.train.optimizer!r}")
    if not 0 <= c.train.stage <= n_stages:
        raise ValueError(f"config.train.stage: expected 0 (every stage) or 1..{n_stages}, got {c.train.stage}")
    if c.train.epochs < 1:
        raise ValueError(f"config.train.epochs: expected >= 1, got {c.train.epochs}")
    if c.train.keep_checkpoints < 1:
        raise ValueError(f"config.train.keep_checkpoints: expected >= 1, got {c.train.keep_checkpoints}")
    if c.train.ohem_min_kept < 1 or not 0.0 <= c.train.ohem_thresh <= 1.0:
        raise ValueError(
            f"config.train.ohem_min_kept / ohem_thresh: expected >= 1 and in [0, 1], got "
            f"{c.train.ohem_min_kept} / {c.train.ohem_thresh}"
        )
    for key in c.train.backbone_phase:
        if key not in c.train or key == "backbone_phase":
            raise ValueError(f"config.train.backbone_phase.{key}: not a config.train field it could override")
    if c.train.refiner_input_order not in ("fine_first", "coarse_first"):
        raise ValueError(
            "config.train.refiner_input_order: expected 'fine_first' or 'coarse_first', "
            f"got {c.train.refiner_input_order!r}"
        )
    check_at_least(c.train.batch_size, 1, "train.batch_size")
    for field, node in (("train", c.train), ("train.backbone_phase", c.train.backbone_phase)):
        if "lr" in node and not (isinstance(node.lr, (int, float)) and 0 < node.lr < float("inf")):
            # a negative rate trains uphill without any error
            raise ValueError(f"config.{field}.lr: expected a learning rate > 0, got {node.lr}")
    check_num_workers(c.data.num_workers)
    for field, value in (("eval.max_images", c.eval.max_images), ("train.eval_max_images", c.train.eval_max_images)):
        if value is not None and (value == 0 or value < -1):  # 0 images would report an mIoU of 0.00
            raise ValueError(f"config.{field}: expected -1 (every image) or a count >= 1, got {value}")
    parse_int_list(c.train.lr_milestones, "train.lr_milestones")
    for name, choices in (("progress", ("auto", "on", "off")), ("reader", ("auto", "tifffile", "openslide"))):
        if c.predict[name] not in choices:
            raise ValueError(f"config.predict.{name}: expected one of {', '.join(choices)}, got {c.predict[name]!r}")
    if c.predict.label_format not in ("none", "ids"):
        raise ValueError(f"config.predict.label_format: expected 'none' or 'ids', got {c.predict.label_format!r}")


def load_config_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file, as `main.py --config PATH[:ARG]` loads it (sweep configs build
    on their base config this way)."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"magnet_jax_config_{path.stem}", path)
    if spec is None or not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
