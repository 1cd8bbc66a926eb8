"""The contract every registered model keeps (CONTRIBUTING.md, "a backbone is one file and one registry line"),
checked for each name in `magnet_jax.models`' registry, so that a new line there is tested with no new test:

- one file of `magnet_jax/models/` and a constructor `Model(num_classes, *, rngs, <keyword options with
  defaults>)`, which `build_model` calls;
- NHWC in and out: a backbone maps images [B, H, W, 3] to logits [B, H, W, num_classes] and, with
  `return_heads=True`, to {"out": [B, H, W, n], "aux": [B, h, w, n] or None}; a refiner maps two probability
  maps [B, H, W, n] to logits [B, H, W, n];
- the PyTorch-layout state dict (`models/state_dict.py`, what `.pth` conversion reads) covers every weight and
  BatchNorm statistic: model -> state dict -> another model gives identical outputs.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest
from flax import nnx

from magnet_jax.models import _REGISTRY, BACKBONE, MODEL_NAMES, REFINER, build_model, model_constructor, model_kind
from magnet_jax.models.state_dict import expected_state_dict_shapes, load_state_dict, state_dict_from_model
from magnet_jax.weights import weights_tree

N, B, HW = 3, 2, 32  # 32 px: the smallest input every backbone's strides accept
# building and running these takes over 15 s on a 2-core CPU (ResNet-50/101, HRNet): `slow`, CI runs them too
LARGE = {"fpn", "psp", "hrnet18+ocr", "hrnet48+ocr"}


def _inputs(name: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    if model_kind(name) == BACKBONE:
        return (rng.normal(size=(B, HW, HW, 3)).astype(np.float32),)
    probs = rng.dirichlet(np.ones(N), size=(2, B, HW, HW)).astype(np.float32)
    return probs[0], probs[1]


def _perturbed(state: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Every entry moved off its initial value (BatchNorm statistics start at 0 and 1), variances kept > 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in state.items():
        noise = rng.uniform(0.5, 1.5, value.shape) if key.endswith("running_var") else rng.normal(0, 0.05, value.shape)
        out[key] = (value + noise if key.endswith(("running_mean", "running_var")) else value * (1 + noise)).astype(
            value.dtype
        )
    return out


def _constructor_parameters(name: str) -> list[inspect.Parameter]:
    ctor = model_constructor(name)
    if isinstance(ctor, type):  # a class: its __init__ (an nnx.Module's metaclass hides it behind *args)
        return list(inspect.signature(ctor.__init__).parameters.values())[1:]
    return list(inspect.signature(ctor).parameters.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_one_file_and_the_constructor_contract(name):
    kind, ctor = _REGISTRY[name]
    module = ctor.__module__
    assert kind in (BACKBONE, REFINER)
    assert module.startswith("magnet_jax.models.") and module.count(".") == 2, module  # one file of models/
    params = _constructor_parameters(name)
    assert params[0].name == "num_classes" and params[0].kind is params[0].POSITIONAL_OR_KEYWORD, params
    by_name = {p.name: p for p in params}
    assert "rngs" in by_name and by_name["rngs"].kind is inspect.Parameter.KEYWORD_ONLY, params
    options = [p for p in params[1:] if p.name != "rngs"]
    assert all(p.default is not inspect.Parameter.empty for p in options), f"options without a default: {options}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in MODEL_NAMES])
def test_forward_shapes_and_state_dict_round_trip(name):
    """One test a model (building the large ones is the cost): shapes, then model -> state dict -> model."""
    source = build_model(name, N, seed=0)
    assert isinstance(source, nnx.Module)
    state = _perturbed(state_dict_from_model(source), seed=1)
    assert {k: v.shape for k, v in state.items()} == expected_state_dict_shapes(source)
    load_state_dict(source, state)
    again = state_dict_from_model(source)
    assert again.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(again[key], state[key], err_msg=key)

    inputs = _inputs(name)
    logits = np.asarray(source(*inputs))
    assert logits.shape == (B, HW, HW, N) and logits.dtype == np.float32, logits.shape
    assert np.isfinite(logits).all()
    if model_kind(name) == BACKBONE:
        heads = source(*inputs, return_heads=True)
        assert set(heads) == {"out", "aux"}
        assert heads["out"].shape == (B, HW, HW, N)
        if heads["aux"] is not None:
            aux = heads["aux"]
            assert aux.ndim == 4 and aux.shape[0] == B and aux.shape[-1] == N, aux.shape

    target = build_model(name, N, seed=2)
    src_leaves, dst_leaves = jax.tree.leaves(weights_tree(source)), jax.tree.leaves(weights_tree(target))
    assert len(src_leaves) == len(dst_leaves)
    assert not all(np.array_equal(a, b) for a, b in zip(src_leaves, dst_leaves, strict=True))  # it can fail
    load_state_dict(target, again)
    # every weight and statistic travelled: nothing of the target's own initialisation is left
    for a, b in zip(src_leaves, jax.tree.leaves(weights_tree(target)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(target(*inputs)), logits)
