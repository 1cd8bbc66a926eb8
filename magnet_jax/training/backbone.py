"""Training a segmentation backbone: CE (or OHEM) on `out` + aux_weight x the same on `aux`, poly LR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flax import nnx

from magnet_jax.sharding import check_batch_size, replicate
from magnet_jax.training.common import (
    LoaderFactory,
    checkpoints_dir,
    epoch_miou,
    export,
    host_model,
    precise_bn,
    step_iou,
    weights_dir,
)
from magnet_jax.training.loop import TrainLoop, total_steps
from magnet_jax.training.optim import make_optimizer
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import init_train_state, split_model

# validate(model in eval mode) -> {"miou": ..., ...}
Validate = Callable[[nnx.Module], dict]


def initial_backbone(spec: RunSpec) -> nnx.Module:
    """The model a backbone run starts from: `spec.init_from` weights, else a seeded random init."""
    from magnet_jax.models import build_model

    if spec.init_from:
        from magnet_jax.weights import load_model_weights

        return load_model_weights(spec.init_from, spec.model, spec.num_classes)
    return build_model(spec.model, spec.num_classes, seed=spec.seed)


def train_backbone(
    spec: RunSpec, workdir: Path, mesh, make_loader: LoaderFactory, validate: Validate | None = None
) -> Path:
    """Trains `spec.model`; returns its exported weights folder (`WORKDIR/weights/backbone`).

    `make_loader(epochs, seed)` gives the training batches (`image` [B, H, W, 3], `label` [B, H, W]);
    `validate(model)` (optional) scores the model every `spec.loop.eval_every_epochs` epochs.
    """
    from magnet_jax.training.backbone_step import make_backbone_step

    check_batch_size(spec.loop.batch_size, mesh)
    loader, spe, adapt = make_loader(spec.loop.epochs, spec.data_seed)
    total = total_steps(spec.loop, spe)
    tx, schedule = make_optimizer(spec.optim, spe, spec.loop.epochs * spe)
    model_def, params, batch_stats, rngs = split_model(initial_backbone(spec), spec.model)
    state = replicate(init_train_state(params, batch_stats, rngs, tx), mesh)
    step = make_backbone_step(
        model_def, tx, schedule, num_classes=spec.num_classes, ignore_label=spec.ignore_label,
        aux_weight=spec.aux_weight, mesh=mesh, fast_conv=spec.fast_conv, loss=spec.loss,
        ohem_thresh=spec.ohem_thresh, ohem_min_kept=spec.ohem_min_kept,
    )  # fmt: skip
    finalize = precise_bn(spec, mesh, model_def, lambda extra, b: (b["image"],), (), make_loader)
    classes = spec.miou_classes

    def summarize(host: dict) -> dict:
        return {"iou": step_iou(host["conf"], classes)}

    def epoch_summary(acc: dict) -> dict:
        return {"miou": epoch_miou(acc["conf"], classes)} if "conf" in acc else {}

    run_validate = None
    if validate is not None and spec.loop.eval_every_epochs > 0:
        def run_validate(st):
            return validate(host_model(model_def, finalize(st)))

    loop = TrainLoop(
        run=spec.name, workdir=workdir, loop=spec.loop, mesh=mesh, step_fn=step, state=state, loader=loader,
        steps_per_epoch=spe, total_steps=total, meta=spec.identity(), summarize=summarize,
        validate=run_validate, epoch_summary=epoch_summary, adapt_batch=adapt,
    )  # fmt: skip
    state = loop.run_loop()
    out = weights_dir(workdir, spec.name)
    return export(model_def, finalize(state), spec, out, source=f"trained: {checkpoints_dir(workdir, spec.name)}")
