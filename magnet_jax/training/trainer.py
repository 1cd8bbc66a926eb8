"""The one trainer: a task (`training.tasks`) and its run spec -> optimizer, state, step, precise BatchNorm,
validation, the TrainLoop (checkpoints, logs, resume) and the exported weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from flax import nnx

from magnet_jax.metrics import freq_weighted_iou, mean_iou
from magnet_jax.sharding import check_batch_size, replicate, shard_batch
from magnet_jax.training.export import checkpoints_dir, export, host_model, weights_dir
from magnet_jax.training.loop import TrainLoop, total_steps
from magnet_jax.training.optim import make_optimizer
from magnet_jax.training.precise_bn import STREAM_SEED_OFFSET, make_finalize
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import init_train_state, split_model
from magnet_jax.training.tasks import Task

# A loader factory: (epochs or None for an endless stream, seed) -> (grain loader, steps per epoch, batch adapter).
LoaderFactory = Callable[[int | None, int], tuple[object, int, Callable[[dict], dict] | None]]
# validate(model in eval mode) -> {"miou": ..., ...}
Validate = Callable[[nnx.Module], dict]


def train(
    task: Task, spec: RunSpec, workdir: Path, mesh, make_loader: LoaderFactory, validate: Validate | None = None
) -> Path:
    """Trains `spec.model` as `task` says; returns its exported weights folder (`WORKDIR/weights/RUN`).

    `make_loader(epochs, seed)` gives the training batches (`task.batch_keys`); `validate(model)` (optional)
    scores the model every `spec.loop.eval_every_epochs` epochs. A rerun resumes from the latest checkpoint.
    """
    check_batch_size(spec.loop.batch_size, mesh)
    extra = task.extra(mesh)
    loader, spe, adapt = make_loader(spec.loop.epochs, spec.data_seed)
    total = total_steps(spec.loop, spe)
    tx, schedule = make_optimizer(spec.optim, spe, spec.loop.epochs * spe)
    model_def, params, batch_stats, rngs = split_model(task.init_model(spec), spec.model)
    state = replicate(init_train_state(params, batch_stats, rngs, tx), mesh)
    step = task.make_step(spec, model_def, tx, schedule, mesh)

    def bn_batches() -> Iterator[dict]:  # a fixed stream apart from training's: the same statistics every time
        bn_loader, _, bn_adapt = make_loader(None, spec.data_seed + STREAM_SEED_OFFSET)
        for b in bn_loader:
            yield shard_batch(bn_adapt(b) if bn_adapt else b, mesh)

    finalize = make_finalize(spec.precise_bn_batches, mesh, model_def,
                             lambda ex, batch: task.model_inputs(spec, ex, batch), extra, bn_batches)  # fmt: skip
    classes = spec.miou_classes

    def summarize(host: dict) -> dict:  # the progress bar's numbers (fractions, shown in %)
        return {f"iou{suffix}": step_iou(host[key], classes) for key, suffix in task.views.items()}

    def epoch_summary(acc: dict) -> dict:
        return {f"miou{suffix}": epoch_miou(acc[key], classes) for key, suffix in task.views.items() if key in acc}

    run_validate = None
    if validate is not None and spec.loop.eval_every_epochs > 0:
        def run_validate(st):
            return validate(host_model(model_def, finalize(st)))

    ckpts = checkpoints_dir(workdir, spec.name)
    task.before_resume(spec, ckpts)
    loop = TrainLoop(
        run=spec.name, workdir=workdir, loop=spec.loop, mesh=mesh, step_fn=lambda st, b: step(st, extra, b),
        state=state, loader=loader, steps_per_epoch=spe, total_steps=total, meta=task.meta(spec),
        summarize=summarize, validate=run_validate, epoch_summary=epoch_summary, adapt_batch=adapt,
    )  # fmt: skip
    state = loop.run_loop()
    return export(model_def, finalize(state), spec, weights_dir(workdir, spec.name), source=f"trained: {ckpts}")


def step_iou(conf: np.ndarray, classes: tuple[int, ...]) -> float:
    """The original's per-step progress number: frequency-weighted IoU of one batch (a fraction; the
    progress bar shows it as a percentage)."""
    return freq_weighted_iou(np.asarray(conf), list(classes) or None)


def epoch_miou(conf: np.ndarray, classes: tuple[int, ...]) -> float:
    """mIoU over `classes` (all when empty) of an epoch's summed confusion matrix [C, C]."""
    return mean_iou(np.asarray(conf), list(classes) or None)
