"""Model variables <-> nested dicts of arrays, strictly; the checks shared by both file formats.

A model's weights are its NNX `Param` and `BatchStat` variables (NHWC / HWIO layouts),
keyed by the module's attribute path (`layer1.0.conv1.kernel`) as a nested dict of
string keys: what a weights checkpoint stores.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.models import MODEL_NAMES
from magnet_jax.models.state_dict import StateDictMismatchError


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be used; the message names it and what was expected."""


def weight_filter():
    return nnx.Any(nnx.Param, nnx.BatchStat)


def flat_variables(model: nnx.Module) -> dict[tuple[str, ...], Any]:
    """(path parts as strings) -> array, for every Param and BatchStat of `model`."""
    state = nnx.state(model, weight_filter())
    out = {}
    for path, value in nnx.to_flat_state(state):
        value = value.get_value() if isinstance(value, nnx.Variable) else value
        out[tuple(str(p) for p in path)] = value
    return out


def nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def weights_tree(model: nnx.Module) -> dict[str, Any]:
    """The model's weights as a nested dict with string keys (what a weights checkpoint stores)."""
    return nest(flat_variables(model))


def flatten_tree(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten_tree(value, (*prefix, str(key))))
        return out
    return {prefix: tree}


def mismatch_error(
    source: str,
    expected: dict[tuple[str, ...], tuple[int, ...]],
    given: dict[tuple[str, ...], tuple[int, ...]],
    what: str,
) -> StateDictMismatchError | None:
    missing = sorted(".".join(k) for k in set(expected) - set(given))
    unexpected = sorted(".".join(k) for k in set(given) - set(expected))
    misshaped = [
        f"{'.'.join(k)}: checkpoint {tuple(given[k])}, model {tuple(expected[k])}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return None
    lines = [f"{source} does not fit {what} ({len(expected)} arrays expected):"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {len(items)} {title} array(s): " + ", ".join(shown))
    return StateDictMismatchError("\n".join(lines))


def assign_weights_tree(model: nnx.Module, tree: dict[str, Any], *, source: str = "weights") -> None:
    """Copies a nested dict of arrays (as `weights_tree` returns) into `model` in place, strictly.

    Raises `StateDictMismatchError` naming `source` and every missing, unexpected and
    misshaped array; on error the model is left untouched.
    """
    current = flat_variables(model)
    given = flatten_tree(tree)
    error = mismatch_error(
        source,
        {k: tuple(np.shape(v)) for k, v in current.items()},
        {k: tuple(np.shape(v)) for k, v in given.items()},
        "the model",
    )
    if error is not None:
        raise error
    state = nnx.state(model, weight_filter())
    pure = nest({k: jnp.asarray(v, dtype=current[k].dtype) for k, v in given.items()})
    nnx.replace_by_pure_dict(state, pure)  # maps the string keys back to integer list indices
    nnx.update(model, state)


def check_model_args(model_name: str, num_classes: int, source: str) -> None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"{source}: unknown model {model_name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{source}: num_classes must be a positive integer, got {num_classes!r}")
