"""The training state: a pytree of everything a training step changes.

A model is split once into a static `graphdef` and its variables:
`params` (`nnx.Param`, trained), `batch_stats` (`nnx.BatchStat`, BatchNorm running
statistics) and `rngs` (everything else: the dropout RNG streams). Training steps
are pure functions of `TrainState`, so the same state can be checkpointed, restored
and laid out on a device mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct


@struct.dataclass
class TrainState:
    """`step` (int32 scalar: optimizer updates done), `params`, `batch_stats`, `rngs` (nnx.State), `opt_state`."""

    step: jax.Array
    params: nnx.State
    batch_stats: nnx.State
    rngs: nnx.State
    opt_state: Any


@dataclass(frozen=True)
class ModelDef:
    """Static halves of one model: its graph in train mode and in eval mode."""

    name: str
    train: Any  # nnx.GraphDef, BatchNorm on batch statistics, dropout on
    eval: Any  # nnx.GraphDef, running statistics, dropout off

    def merge(self, state: TrainState | None = None, *, train: bool, params=None, batch_stats=None, rngs=None):
        """Rebuilds the module from a state (or explicit variables) in train or eval mode."""
        if state is not None:
            params, batch_stats, rngs = state.params, state.batch_stats, state.rngs
        return nnx.merge(self.train if train else self.eval, params, batch_stats, rngs, copy=True)


def split_model(model: nnx.Module, name: str = "") -> tuple[ModelDef, nnx.State, nnx.State, nnx.State]:
    """(ModelDef, params, batch_stats, rngs) of `model` (its mode is left as it was)."""
    was_training = _is_training(model)
    model.eval()
    graph_eval, params, batch_stats, rngs = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    model.train()
    graph_train, _, _, _ = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
    if not was_training:
        model.eval()
    return ModelDef(name, graph_train, graph_eval), params, batch_stats, rngs


def _is_training(model: nnx.Module) -> bool:
    for _, m in nnx.iter_graph(model):
        if hasattr(m, "use_running_average"):
            return not m.use_running_average
    return False


def init_train_state(params: nnx.State, batch_stats: nnx.State, rngs: nnx.State, tx: optax.GradientTransformation):
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        rngs=rngs,
        opt_state=tx.init(params),
    )


def split_variables(module: nnx.Module) -> tuple[nnx.State, nnx.State, nnx.State]:
    """(params, batch_stats, rngs) of a module rebuilt inside a step."""
    _, params, batch_stats, rngs = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    return params, batch_stats, rngs


# ---------------------------------------------------------------- typed PRNG keys <-> raw data


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """Typed PRNG key arrays -> their uint32 data (orbax stores plain arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def data_to_keys(tree: Any, like: Any) -> Any:
    """Inverse of `keys_to_data`, using `like` (same structure) to know which leaves were keys."""
    return jax.tree.map(
        lambda x, ref: jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x, tree, like
    )


def global_norm(tree: Any) -> jax.Array:
    return optax.global_norm(tree)
