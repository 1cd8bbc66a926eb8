"""Precise BatchNorm statistics: replace the running mean / variance by their average over K batches.

The refinement module's BatchNorms use PyTorch momentum 0.01: the running statistics forget their
initial values (0 / 1) with a time constant of ~100 steps, which the original's 18k-step runs
never notice but a short run (the synthetic demo's few hundred steps) does: the module then
behaves differently in eval mode than it learned in train mode. Re-estimating the statistics
after training (cumulative average over `config.train.precise_bn_batches` training batches,
parameters unchanged) removes that gap. Off by default (the original does not do it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.models.layers import BatchNorm2d
from magnet_jax.sharding import data_sharding, replicated
from magnet_jax.training.state import ModelDef, TrainState, split_variables

# The seed offset of precise BN's own stream of training batches: the same batches at every call, apart from
# the ones trained on.
STREAM_SEED_OFFSET = 7919


def make_finalize(
    num_batches: int, mesh: Mesh | None, model_def: ModelDef, model_inputs: Callable, extra: tuple,
    batches: Callable[[], Iterable[dict]],
) -> Callable[[TrainState], TrainState]:
    """`finalize(state) -> state`: BatchNorm statistics re-estimated on `num_batches` batches of `batches()` (a
    fresh stream of sharded batches each call, which must give the same batches every time), or the identity
    when `num_batches` <= 0. `model_inputs(extra, batch)`: the model's call arguments."""
    if num_batches <= 0:
        return lambda state: state
    update = make_bn_update(model_def, model_inputs, mesh=mesh)

    def finalize(state: TrainState) -> TrainState:
        return recalibrate(update, state, extra, iter(batches()), num_batches)

    return finalize


def make_bn_update(
    model_def: ModelDef, model_inputs: Callable[[tuple, dict], tuple], *, mesh: Mesh | None = None
) -> Callable:
    """`update(state, extra, batch, momentum) -> state` with new batch_stats only (jitted).

    Runs the model in train mode on `model_inputs(extra, batch)` with every BatchNorm's momentum set
    to `momentum` (PyTorch convention: weight of the batch's statistics).
    """

    def update(state: TrainState, extra: tuple, batch: dict, momentum: jax.Array) -> TrainState:
        model = model_def.merge(state, train=True)
        norms = [m for _, m in nnx.iter_graph(model) if isinstance(m, BatchNorm2d)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = momentum
        model(*model_inputs(extra, batch))
        for m, value in zip(norms, saved, strict=True):
            m.momentum = value
        _, batch_stats, _ = split_variables(model)
        return state.replace(batch_stats=batch_stats)

    if mesh is None:
        return jax.jit(update)
    rep, dat = replicated(mesh), data_sharding(mesh)
    return jax.jit(update, in_shardings=(rep, rep, dat, rep), out_shardings=rep)


def recalibrate(update: Callable, state: TrainState, extra: tuple, batches: Iterator[dict], num_batches: int):
    """Cumulative average of the batch statistics of `num_batches` batches (momentum 1/(k+1) at batch k)."""
    for k in range(int(num_batches)):
        batch = next(batches)
        state = update(state, extra, batch, jnp.asarray(1.0 / (k + 1), jnp.float32))
    return state
