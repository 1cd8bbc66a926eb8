"""Pieces both trainers use: the workdir layout, exporting weights, host copies of a trained model,
precise BatchNorm and the progress-bar IoU numbers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from magnet_jax.metrics import freq_weighted_iou, mean_iou
from magnet_jax.sharding import replicate, shard_batch, to_host
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import ModelDef, TrainState, data_to_keys, keys_to_data, split_model

# A loader factory: (epochs or None for an endless stream, seed) -> (grain loader, steps per epoch, batch adapter).
LoaderFactory = Callable[[int | None, int], tuple[object, int, Callable[[dict], dict] | None]]


def weights_dir(workdir: str | Path, run: str) -> Path:
    """`WORKDIR/weights/RUN`: the final weights of a run (a converted-weights folder)."""
    return Path(workdir) / "weights" / run


def checkpoints_dir(workdir: str | Path, run: str) -> Path:
    return Path(workdir) / "checkpoints" / run


def host_model(model_def: ModelDef, state: TrainState) -> nnx.Module:
    """The trained module in eval mode on this process's default device."""
    params, batch_stats = to_host((state.params, state.batch_stats))
    rngs = data_to_keys(to_host(keys_to_data(state.rngs)), state.rngs)
    return model_def.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)


def export(model_def: ModelDef, state: TrainState, spec: RunSpec, path: Path, source: str) -> Path:
    """Saves the run's final weights (process 0 writes; every process returns the path)."""
    from magnet_jax.weights import save_model_weights

    model = host_model(model_def, state)
    if jax.process_index() == 0:
        save_model_weights(model, path, model_name=spec.model, num_classes=spec.num_classes, overwrite=True,
                           source=source)  # fmt: skip
    return path


def model_digest(model: nnx.Module) -> str:
    """sha256 (16 hex digits) of a model's parameters and BatchNorm statistics: which frozen backbone a
    refiner's checkpoints were trained on."""
    import hashlib

    _, params, batch_stats, _ = split_model(model)
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((params, batch_stats)):
        h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return h.hexdigest()[:16]


def frozen_vars(model: nnx.Module, mesh) -> tuple[ModelDef, tuple]:
    """(definition, replicated (params, batch_stats, rngs)) of a model used frozen inside a step."""
    model_def, params, batch_stats, rngs = split_model(model)
    return model_def, replicate((params, batch_stats, rngs), mesh)


def precise_bn(
    spec: RunSpec, mesh, model_def: ModelDef, model_inputs: Callable, extra: tuple, make_loader: LoaderFactory
) -> Callable[[TrainState], TrainState]:
    """`finalize(state) -> state`: BatchNorm statistics re-estimated on `spec.precise_bn_batches` batches of a
    fixed separate stream (seed + 7919, the same statistics every time), or the identity."""
    if spec.precise_bn_batches <= 0:
        return lambda state: state
    from magnet_jax.training.precise_bn import make_bn_update, recalibrate

    update = make_bn_update(model_def, model_inputs, mesh=mesh)

    def finalize(state: TrainState) -> TrainState:
        loader, _, adapt = make_loader(None, spec.data_seed + 7919)

        def batches() -> Iterator[dict]:
            for b in loader:
                yield shard_batch(adapt(b) if adapt else b, mesh)

        return recalibrate(update, state, extra, batches(), spec.precise_bn_batches)

    return finalize


def step_iou(conf: np.ndarray, classes: tuple[int, ...]) -> float:
    """The original's per-step progress number: frequency-weighted IoU of one batch (a fraction; the
    progress bar shows it as a percentage)."""
    return freq_weighted_iou(np.asarray(conf), list(classes) or None)


def epoch_miou(conf: np.ndarray, classes: tuple[int, ...]) -> float:
    return mean_iou(np.asarray(conf), list(classes) or None)
