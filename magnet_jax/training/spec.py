"""What one training run is, read once from `config.train` into frozen specs.

A *run* trains one model: `backbone`, `refiner` (one refiner shared by every stage) or `refiner_stageS`
(the refiner of stage S only, whose data pairs the coarse scale with scale S). Everything below the
commands takes these specs, never the ConfigDict. `RunSpec.identity()` is what a checkpoint records: a
resume with any other value of those fields is refused (`checkpointing.check_resume_meta`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from magnet_jax.config import parse_int_list, parse_size, parse_sizes

Size = tuple[int, int]

# RunSpec field -> the config field it is read from (for messages; `loss` is train.backbone_loss or
# train.refiner_loss by kind, `model` model.backbone or model.refiner).
CONFIG_FIELDS = {
    "loop.epochs": "train.epochs", "loop.batch_size": "train.batch_size", "optim.optimizer": "train.optimizer",
    "optim.lr": "train.lr", "optim.momentum": "train.momentum", "optim.weight_decay": "train.weight_decay",
    "optim.schedule": "train.lr_schedule", "optim.milestones": "train.lr_milestones", "optim.gamma": "train.lr_gamma",
    "optim.poly_power": "train.poly_power", "loss": "train.backbone_loss / train.refiner_loss",
    "aux_weight": "train.aux_weight", "ohem_thresh": "train.ohem_thresh", "ohem_min_kept": "train.ohem_min_kept",
    "input_hw": "magnet.input_size", "crop_wh": "magnet.crop_size", "data_scales": "magnet.scales",
    "sampling": "train.backbone_sampling", "input_order": "train.refiner_input_order", "fast_conv": "train.fast_conv",
    "precise_bn_batches": "train.precise_bn_batches", "init_from": "train.init_backbone", "seed": "seed",
    "data_seed": "seed", "model": "model.backbone / model.refiner", "num_classes": "data.num_classes",
    "ignore_label": "data.ignore_label", "backbone_weights": "checkpoint.backbone", "stage": "train.stage",
    "miou_classes": "data.miou_classes", "backbone": "model.backbone", "frozen_conv": "magnet.conv_algorithm",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    optimizer: str  # sgd (momentum, coupled weight decay, the original) | adam (same decay)
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # poly | multistep | constant (resolved from "auto")
    milestones: tuple[int, ...]  # multistep, in epochs
    gamma: float
    poly_power: float


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    epochs: int
    max_steps: int  # stop early (-1: epochs decide); a resume may change it
    batch_size: int  # global
    log_every_steps: int
    checkpoint_every_steps: int
    keep_checkpoints: int
    eval_every_epochs: int
    eval_max_images: int
    progress: bool


@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str  # backbone | refiner | refiner_stageS
    kind: str  # backbone | refiner
    model: str  # registry name of the model trained
    num_classes: int
    ignore_label: int
    seed: int  # model initialisation
    data_seed: int
    loop: LoopSpec
    optim: OptimSpec
    loss: str  # ce | ohem
    aux_weight: float
    ohem_thresh: float
    ohem_min_kept: int
    input_hw: Size
    crop_wh: Size
    data_scales: tuple[Size, ...]  # the scales its training pairs are drawn from (W, H)
    sampling: str  # backbone: crop | scales
    stage: int | None  # per-stage refiner: its stage (1-based); None otherwise
    backbone: str  # refiner runs: the frozen backbone; backbone runs: the model itself
    backbone_weights: str  # refiner runs: config.checkpoint.backbone ("" = the one this workdir trained)
    input_order: str  # refiner: fine_first | coarse_first
    fast_conv: bool
    frozen_conv: str  # refiner runs: the frozen backbone's convolutions (magnet.conv_algorithm); backbone: direct
    precise_bn_batches: int
    init_from: str  # backbone: start from these weights ("" = random)
    miou_classes: tuple[int, ...]

    # Fields a resume may change: they decide when to stop, log or validate, not what a step computes.
    RESUMABLE = ("loop.max_steps", "loop.log_every_steps", "loop.checkpoint_every_steps", "loop.keep_checkpoints",
                 "loop.eval_every_epochs", "loop.eval_max_images", "loop.progress")  # fmt: skip

    def identity(self) -> dict[str, Any]:
        """Flat `{"field": value}` of everything that changes what training computes (JSON types)."""
        flat = _flatten(dataclasses.asdict(self))
        return {k: v for k, v in flat.items() if k not in self.RESUMABLE}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, tuple):
            out[name] = [list(v) if isinstance(v, tuple) else v for v in value]
        else:
            out[name] = value
    return out


def _optim(t: Mapping[str, Any], kind: str) -> OptimSpec:
    schedule = str(t["lr_schedule"])
    if schedule == "auto":
        schedule = "poly" if kind == "backbone" else "multistep"
    return OptimSpec(
        optimizer=str(t["optimizer"]), lr=float(t["lr"]), momentum=float(t["momentum"]),
        weight_decay=float(t["weight_decay"]),
        schedule=schedule, milestones=tuple(parse_int_list(t["lr_milestones"], "train.lr_milestones")),
        gamma=float(t["lr_gamma"]), poly_power=float(t["poly_power"]),
    )  # fmt: skip


def _loop(t: Mapping[str, Any]) -> LoopSpec:
    return LoopSpec(
        epochs=int(t["epochs"]), max_steps=int(t["max_steps"]), batch_size=int(t["batch_size"]),
        log_every_steps=max(int(t["log_every_steps"]), 1), checkpoint_every_steps=int(t["checkpoint_every_steps"]),
        keep_checkpoints=int(t["keep_checkpoints"]), eval_every_epochs=int(t["eval_every_epochs"]),
        eval_max_images=int(t["eval_max_images"]), progress=bool(t["progress"]),
    )  # fmt: skip


def _phase_values(train, overrides) -> dict[str, Any]:
    """`{field: value}` of `config.train` with the `config.train.backbone_phase` fields in their place (target
    `all`'s backbone; `config.validate_config` allows only fields of config.train there). The config is not
    changed."""
    values = {key: train[key] for key in train if key != "backbone_phase"}
    values.update({key: overrides[key] for key in overrides})
    return values


def _common(config, t: Mapping[str, Any], kind: str, miou_classes: tuple[int, ...]) -> dict[str, Any]:
    m = config.magnet
    in_w, in_h = parse_size(m.input_size, "magnet.input_size")
    return dict(
        kind=kind, num_classes=int(config.data.num_classes), ignore_label=int(config.data.ignore_label),
        data_seed=int(config.seed), loop=_loop(t), optim=_optim(t, kind), aux_weight=float(t["aux_weight"]),
        ohem_thresh=float(t["ohem_thresh"]), ohem_min_kept=int(t["ohem_min_kept"]), input_hw=(in_h, in_w),
        crop_wh=parse_size(m.crop_size, "magnet.crop_size"), fast_conv=bool(t["fast_conv"]),
        precise_bn_batches=int(t["precise_bn_batches"]), miou_classes=tuple(miou_classes),
        backbone=str(config.model.backbone), input_order=str(t["refiner_input_order"]),
        backbone_weights=str(config.checkpoint.backbone or "") if kind == "refiner" else "",
        frozen_conv=str(config.magnet.conv_algorithm) if kind == "refiner" else "direct",
    )  # fmt: skip


def backbone_run(config, miou_classes: tuple[int, ...], *, phase_overrides: bool = False) -> RunSpec:
    """The backbone run of `config` (with `config.train.backbone_phase.*` applied for target `all`)."""
    t = _phase_values(config.train, config.train.backbone_phase) if phase_overrides else config.train
    scales = tuple(parse_sizes(config.magnet.scales, "magnet.scales"))
    sampling = str(t["backbone_sampling"])
    return RunSpec(
        name="backbone", model=str(config.model.backbone), seed=int(config.seed), loss=str(t["backbone_loss"]),
        data_scales=(scales[0],) + scales if sampling == "scales" else scales, sampling=sampling, stage=None,
        init_from=str(t["init_backbone"] or ""), **_common(config, t, "backbone", miou_classes),
    )  # fmt: skip


def refiner_runs(config, miou_classes: tuple[int, ...]) -> list[RunSpec]:
    """The refiner run(s) of `config`: one shared refiner, or one per stage (`config.train.stage`: only that one)."""
    t = config.train
    scales = tuple(parse_sizes(config.magnet.scales, "magnet.scales"))
    n_stages = len(scales) - 1
    if n_stages < 1:
        raise ValueError("config.magnet.scales: refiner training needs at least two scales")
    refiner = str(config.model.refiner)
    common = _common(config, t, "refiner", miou_classes)
    if t["shared_refiner"]:
        return [RunSpec(name="refiner", model=refiner, seed=int(config.seed), loss=str(t["refiner_loss"]),
                        data_scales=scales, sampling="pairs", stage=None, init_from="", **common)]  # fmt: skip
    stages = [int(t["stage"])] if int(t["stage"]) else list(range(1, n_stages + 1))
    return [
        RunSpec(name=f"refiner_stage{s}", model=refiner, seed=int(config.seed) + s, loss=str(t["refiner_loss"]),
                data_scales=(scales[0], scales[s]), sampling="pairs", stage=s, init_from="", **common)
        for s in stages
    ]  # fmt: skip
