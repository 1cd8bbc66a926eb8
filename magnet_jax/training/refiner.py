"""Training a refinement module on a frozen backbone (OHEM cross entropy, MultiStepLR, as the original)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from flax import nnx

from magnet_jax.sharding import check_batch_size, replicate
from magnet_jax.training.checkpointing import set_aside_if_changed
from magnet_jax.training.common import (
    LoaderFactory,
    checkpoints_dir,
    epoch_miou,
    export,
    frozen_vars,
    host_model,
    model_digest,
    precise_bn,
    step_iou,
    weights_dir,
)
from magnet_jax.training.loop import TrainLoop, total_steps
from magnet_jax.training.optim import make_optimizer
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import init_train_state, split_model

VIEWS = ("coarse", "fine", "aggre")


def train_refiner(
    spec: RunSpec,
    workdir: Path,
    mesh,
    backbone: nnx.Module,
    make_loader: LoaderFactory,
    validate: Callable[[nnx.Module], dict] | None = None,
) -> Path:
    """Trains one refinement module (`spec.name`: `refiner` or `refiner_stageS`) on the frozen `backbone`;
    returns its weights folder.

    `make_loader(epochs, seed)` gives refiner pairs (`coarse_image`, `fine_image` [B, h, w, 3], `label`
    [B, h, w], `box` [B, 4]) drawn from `spec.data_scales`; `validate(refiner)` scores MagNet with it.
    """
    from magnet_jax.models import build_model
    from magnet_jax.training.refiner_step import make_refiner_step, refiner_model_inputs

    check_batch_size(spec.loop.batch_size, mesh)
    bb_def, frozen = frozen_vars(backbone, mesh)
    loader, spe, _ = make_loader(spec.loop.epochs, spec.data_seed)
    total = total_steps(spec.loop, spe)
    tx, schedule = make_optimizer(spec.optim, spe, spec.loop.epochs * spe)
    ref_def, params, batch_stats, rngs = split_model(build_model(spec.model, spec.num_classes, seed=spec.seed),
                                                     spec.model)  # fmt: skip
    state = replicate(init_train_state(params, batch_stats, rngs, tx), mesh)
    jstep = make_refiner_step(
        bb_def, ref_def, tx, schedule, num_classes=spec.num_classes, ignore_label=spec.ignore_label,
        input_hw=spec.input_hw, input_order=spec.input_order, ohem_thresh=spec.ohem_thresh,
        ohem_min_kept=spec.ohem_min_kept, loss=spec.loss, mesh=mesh, fast_conv=spec.fast_conv,
        frozen_conv=spec.frozen_conv,
    )  # fmt: skip

    def step_fn(st, batch):
        return jstep(st, frozen, batch)

    def model_inputs(extra, batch):
        return refiner_model_inputs(bb_def, extra, batch, spec.input_hw, spec.input_order, spec.frozen_conv)

    finalize = precise_bn(spec, mesh, ref_def, model_inputs, frozen, make_loader)
    classes = spec.miou_classes

    def summarize(host: dict) -> dict:
        return {f"iou_{k}": step_iou(host[f"conf_{k}"], classes) for k in VIEWS}  # "iou": a fraction, shown in %

    def epoch_summary(acc: dict) -> dict:
        return {f"miou_{k}": epoch_miou(acc[f"conf_{k}"], classes) for k in VIEWS if f"conf_{k}" in acc}

    run_validate = None
    if validate is not None and spec.loop.eval_every_epochs > 0:
        def run_validate(st):
            return validate(host_model(ref_def, finalize(st)))

    # Checkpoints trained on another backbone (it trained further since: `max_steps`, an interrupted run)
    # would resume into a model no uninterrupted run gives: they are set aside and the refiner starts again.
    digest = model_digest(backbone)
    moved = set_aside_if_changed(checkpoints_dir(workdir, spec.name), "frozen_backbone", digest)
    if moved is not None:
        print(f"note: {spec.name}: its checkpoints were trained on an earlier state of the backbone, which has "
              f"trained since; it trains again from step 0 (the old checkpoints: {moved})", file=sys.stderr,
              flush=True)  # fmt: skip
    loop = TrainLoop(
        run=spec.name, workdir=workdir, loop=spec.loop, mesh=mesh, step_fn=step_fn, state=state, loader=loader,
        steps_per_epoch=spe, total_steps=total, meta=dict(spec.identity(), frozen_backbone=digest),
        summarize=summarize,
        validate=run_validate, epoch_summary=epoch_summary,
    )  # fmt: skip
    state = loop.run_loop()
    out = weights_dir(workdir, spec.name)
    return export(ref_def, finalize(state), spec, out, source=f"trained: {checkpoints_dir(workdir, spec.name)}")
