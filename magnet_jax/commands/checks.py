"""Every check a config gets before any file is written or any model compiled, run once per command.

`check_config(config, mode)` runs, in order: the schema's own field checks (`config.validate_config`),
model names against the registry by kind (a refiner is not a backbone), the MagNet plan (n_points,
n_patches within the patch grids, ...), the streaming options, the dataset (source, split, label format,
class names and mIoU classes, num_classes <= 255 for uint8 label maps) and, for training, the runs and
the backbone's sample spec. Each failure is one ValueError naming the field and what was expected.

It returns what it built (`Checked`: the plan, streaming options, dataset, runs, sample spec): `main.py`
hands it to the command, which uses these typed specs instead of building (and checking) them again.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from magnet_jax.allocator import release_heap

if TYPE_CHECKING:
    from magnet_jax.data import ResolvedDataset
    from magnet_jax.data.sample_spec import BackboneSampleSpec
    from magnet_jax.inference.plan import MagNetPlan
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.training.spec import RunSpec

MODES = ("train", "evaluate", "predict", "check", "sweep")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Checked:
    """The specs of a checked config (built once; frozen)."""

    mode: str
    plan: MagNetPlan
    stream: StreamOptions
    dataset: ResolvedDataset
    backbone_run: RunSpec | None = None  # train: the backbone run (target `all`: with its phase settings)
    refiner_runs: tuple[RunSpec, ...] = ()  # train: the refiner runs (target refiner | all)
    backbone_sample: BackboneSampleSpec | None = None  # train, backbone `crop` sampling: its samples


def check_config(config, mode: str = "train") -> Checked:
    """Raises ValueError naming the first field of `config` that `mode` cannot use; else its specs."""
    from magnet_jax.config import validate_config
    from magnet_jax.data import dataset_spec
    from magnet_jax.field_checks import check_ignore_label
    from magnet_jax.inference.plan import plan_from_config
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.models import BACKBONE, REFINER, check_model_name

    if mode not in MODES:
        raise ValueError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    validate_config(config)
    check_model_name(str(config.model.backbone), BACKBONE, "config.model.backbone")
    check_model_name(str(config.model.refiner), REFINER, "config.model.refiner")
    plan = plan_from_config(config)  # ValueError naming the config.magnet field
    # Freed per-tile buffers go back to the OS after each tile: allocator tuning belongs to the entry points.
    stream = StreamOptions.from_config(config, after_tile=release_heap)
    if str(config.data.eval_split) not in SPLITS:
        raise ValueError(f"config.data.eval_split: expected one of {', '.join(SPLITS)}, got {config.data.eval_split!r}")
    check_ignore_label(config.data.ignore_label)
    dataset = dataset_spec(config)  # class names, mIoU classes, label format, source, num_classes
    checked = Checked(mode, plan, stream, dataset)
    if mode != "train":
        return checked
    from magnet_jax.data.sample_spec import BackboneSampleSpec
    from magnet_jax.training import spec

    target = str(config.train.target)
    backbone = spec.backbone_run(config, dataset.miou_classes, phase_overrides=target == "all")
    refiners = tuple(spec.refiner_runs(config, dataset.miou_classes)) if target != "backbone" else ()
    crops = target != "refiner" and backbone.sampling == "crop"  # the loader's own samples, not MagNet's views
    return dataclasses.replace(checked, backbone_run=backbone, refiner_runs=refiners,
                               backbone_sample=BackboneSampleSpec.from_config(config) if crops else None)
