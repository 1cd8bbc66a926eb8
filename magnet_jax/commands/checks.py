"""Every check a config gets before any file is written or any model compiled.

`check_config(config, mode)` runs, in order: the schema's own field checks (`config.validate_config`),
model names against the registry by kind (a refiner is not a backbone), the MagNet plan (n_points,
n_patches within the patch grids, ...), the dataset (source, split, label format, class names and
mIoU classes, num_classes <= 255 for uint8 label maps) and, for training, the fields training reads
(the runs, and the backbone's sample spec).
Each failure is one ValueError naming the field and what was expected.
"""

from __future__ import annotations

MODES = ("train", "evaluate", "predict", "check", "sweep")
SPLITS = ("train", "val", "test")


def check_config(config, mode: str = "train") -> None:
    """Raises ValueError naming the first field of `config` that `mode` cannot use."""
    from magnet_jax.config import validate_config
    from magnet_jax.data import dataset_spec
    from magnet_jax.field_checks import check_ignore_label
    from magnet_jax.inference.plan import plan_from_config
    from magnet_jax.models import BACKBONE, REFINER, check_model_name

    if mode not in MODES:
        raise ValueError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    validate_config(config)
    check_model_name(str(config.model.backbone), BACKBONE, "config.model.backbone")
    check_model_name(str(config.model.refiner), REFINER, "config.model.refiner")
    plan_from_config(config)  # ValueError naming the config.magnet field
    if str(config.data.eval_split) not in SPLITS:
        raise ValueError(f"config.data.eval_split: expected one of {', '.join(SPLITS)}, got {config.data.eval_split!r}")
    check_ignore_label(config.data.ignore_label)
    classes = dataset_spec(config).miou_classes  # class names, mIoU classes, label format, source, num_classes
    if mode == "train":
        from magnet_jax.data.sample_spec import BackboneSampleSpec
        from magnet_jax.training import spec

        run = spec.backbone_run(config, classes, phase_overrides=str(config.train.target) == "all")
        if str(config.train.target) != "refiner" and run.sampling == "crop":  # the loader's own crops
            BackboneSampleSpec.from_config(config)  # backbone_crop_sizes, backbone_scale_jitter
        if str(config.train.target) != "backbone":
            spec.refiner_runs(config, classes)
