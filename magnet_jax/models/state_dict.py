"""PyTorch state dicts <-> Flax NNX modules, strictly.

Module attribute paths mirror PyTorch keys (`layer1.0.conv1`), so a state dict
maps onto a model by walking its leaf layers. Only the layout changes live
here: conv kernels OIHW <-> HWIO, BatchNorm `weight/running_mean/running_var`
<-> `scale/mean/var`. Anything missing, unexpected or misshaped is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flax import nnx

from magnet_jax.models.layers import BatchNorm2d, Conv2d, PReLU


class StateDictMismatchError(ValueError):
    """A state dict does not fit the model: lists every missing, unexpected and misshaped key."""


def _leaf_layers(model: nnx.Module):
    for path, node in nnx.iter_graph(model):
        if isinstance(node, (Conv2d, BatchNorm2d, PReLU)):
            yield ".".join(str(p) for p in path), node


def _slots(prefix: str, layer) -> dict[str, tuple[nnx.Variable, str]]:
    """torch key -> (variable, layout) for one leaf layer."""
    p = f"{prefix}." if prefix else ""
    if isinstance(layer, Conv2d):
        slots = {p + "weight": (layer.kernel, "oihw")}
        if layer.bias is not None:
            slots[p + "bias"] = (layer.bias, "vector")
        return slots
    if isinstance(layer, BatchNorm2d):
        return {
            p + "weight": (layer.scale, "vector"),
            p + "bias": (layer.bias, "vector"),
            p + "running_mean": (layer.mean, "vector"),
            p + "running_var": (layer.var, "vector"),
        }
    return {p + "weight": (layer.weight, "vector")}


def _torch_shape(value_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "oihw":
        kh, kw, i, o = value_shape
        return (o, i, kh, kw)
    return tuple(value_shape)


def expected_state_dict_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """The PyTorch keys and shapes the model expects (without `num_batches_tracked`)."""
    out = {}
    for prefix, layer in _leaf_layers(model):
        for key, (var, layout) in _slots(prefix, layer).items():
            out[key] = _torch_shape(tuple(var[...].shape), layout)
    return out


def load_state_dict(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict") -> None:
    """Copies a PyTorch-layout state dict into `model` in place, or raises.

    `num_batches_tracked` entries are accepted and ignored (they hold no weights).
    Raises `StateDictMismatchError` naming `source` and every missing,
    unexpected and misshaped key; on error the model is left untouched.
    """
    slots = {}
    for prefix, layer in _leaf_layers(model):
        slots.update(_slots(prefix, layer))
    given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(slots) - set(given))
    unexpected = sorted(set(given) - set(slots))
    misshaped = []
    for key in sorted(set(slots) & set(given)):
        var, layout = slots[key]
        want = _torch_shape(tuple(var[...].shape), layout)
        got = tuple(np.shape(given[key]))
        if want != got:
            misshaped.append(f"{key}: checkpoint {got}, model {want}")
    if missing or unexpected or misshaped:
        lines = [f"{source} does not fit the model ({len(slots)} tensors expected):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {len(items)} {title} key(s): " + ", ".join(shown))
        raise StateDictMismatchError("\n".join(lines))
    for key, (var, layout) in slots.items():
        value = np.asarray(given[key], dtype=np.float32)
        if layout == "oihw":
            value = value.transpose(2, 3, 1, 0)
        var[...] = value


def state_dict_from_model(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's variables as a PyTorch-layout state dict (the inverse of `load_state_dict`)."""
    out = {}
    for prefix, layer in _leaf_layers(model):
        for key, (var, layout) in _slots(prefix, layer).items():
            value = np.asarray(var[...])
            out[key] = value.transpose(3, 2, 0, 1) if layout == "oihw" else value
    return out
