"""Winograd F(4x4, 3x3) (`ops.winograd`): the value of XLA's convolution up to float32 summation order,
chosen by `ops.conv.forward_algorithm` at trace time, and the three models still match the original
MagNet within the parity tolerance (max abs error <= 1e-3 x max|logits|) with every eligible layer
computed by it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.models import build_model
from magnet_jax.models.state_dict import load_state_dict
from magnet_jax.ops.conv import conv2d, forward_algorithm
from magnet_jax.ops.winograd import conv3x3_winograd, winograd_pays

DN = ("NHWC", "HWIO", "NHWC")


def _exact(x, w, padding):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN, precision="highest")


@pytest.mark.parametrize(
    ("shape", "cout", "padding"),
    [
        ((1, 7, 9, 3), 5, ((1, 1), (1, 1))),  # odd sizes: the last tile row and column are cut off
        ((2, 8, 8, 4), 6, ((0, 0), (0, 0))),  # "valid", batch 2
        ((1, 11, 6, 5), 2, ((2, 0), (0, 2))),  # asymmetric padding
        ((3, 3, 3, 1), 1, ((1, 1), (1, 1))),  # a single tile
        ((1, 20, 18, 64), 64, ((1, 1), (1, 1))),
    ],
)
def test_winograd_equals_the_convolution(shape, cout, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, shape[-1], cout)) / np.sqrt(9 * shape[-1]), jnp.float32)
    want = np.asarray(_exact(x, w, padding))
    got = np.asarray(jax.jit(conv3x3_winograd, static_argnums=2)(x, w, padding))
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 3e-5 * np.abs(want).max()
    assert not np.array_equal(got, want) or shape[-1] == 1  # really another summation (not XLA's conv)


def test_winograd_refuses_an_empty_output():
    with pytest.raises(ValueError, match="leaves no output"):
        conv3x3_winograd(jnp.ones((1, 2, 2, 1)), jnp.ones((3, 3, 1, 1)), ((0, 0), (0, 0)))


def test_the_measured_rule():
    same = ((1, 1), (1, 1))
    assert winograd_pays((1, 128, 256, 270), (3, 3, 270, 512), same)  # HRNet-OCR's conv3x3_ocr
    assert winograd_pays((1, 64, 64, 128), (3, 3, 128, 128), same)  # 64x64 outputs: the smallest that pays
    assert not winograd_pays((1, 62, 62, 128), (3, 3, 128, 128), same)
    assert not winograd_pays((1, 256, 512, 38), (3, 3, 38, 64), same)  # the 19-class refiner's first layer
    assert not winograd_pays((1, 32, 32, 256), (3, 3, 256, 256), same)  # FPN's 1/32 level
    assert not winograd_pays((1, 508, 508, 32), (3, 3, 32, 32), same)  # the refiner's narrow layers
    assert not winograd_pays((1, 127, 127, 512), (3, 3, 512, 7), same)  # FPN's classifier
    assert winograd_pays((16, 16, 16, 256), (3, 3, 256, 256), same)  # pixels counted over the batch


def _uses_winograd(x, w, **kw) -> bool:
    # a new function each time: the algorithm is read while tracing; Winograd's batched product is a dot
    return "dot_general" in str(jax.make_jaxpr(lambda x, w: conv2d(x, w, **kw))(x, w))


def test_algorithm_is_read_at_trace_time():
    big, small = jnp.ones((1, 64, 64, 64)), jnp.ones((1, 16, 16, 8))
    w_big, w_small = jnp.ones((3, 3, 64, 64)), jnp.ones((3, 3, 8, 8))
    same = {"padding": ((1, 1), (1, 1))}
    assert not _uses_winograd(big, w_big, **same)  # default: direct (training, module calls)
    with forward_algorithm("auto"):
        assert _uses_winograd(big, w_big, **same) == (jax.default_backend() == "cpu")
        assert not _uses_winograd(small, w_small, **same)  # below the rule
    with forward_algorithm("winograd"):
        assert _uses_winograd(small, w_small, **same)  # every eligible layer
        assert not _uses_winograd(big, w_big, stride=(2, 2), **same)  # strided: XLA's
        assert not _uses_winograd(big, w_big, dilation=(2, 2), **same)
    with forward_algorithm("direct"):
        assert not _uses_winograd(big, w_big, **same)
    want = "config.magnet.conv_algorithm: expected 'auto', 'direct' or 'winograd', got 'fast'"
    with pytest.raises(ValueError, match=want), forward_algorithm("fast"):
        pass


def _nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))


def _forward(model, algorithm: str, *args):
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, *xs):
        with forward_algorithm(algorithm):
            return nnx.merge(graphdef, state)(*xs)

    return np.asarray(fwd(state, *args)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize(
    ("model_name", "classes", "fixture", "inputs"),
    [
        # slow: the parity pipelines already run both backbones with `auto` in every CI run
        pytest.param("fpn", 7, "fpn_7", ("input",), marks=pytest.mark.slow),
        pytest.param("hrnet18+ocr", 19, "hrnet18_ocr_19", ("input",), marks=pytest.mark.slow),
        ("refinement", 7, "refine_7", ("fine", "coarse")),
        ("refinement", 19, "refine_19", ("fine", "coarse")),
    ],
)
def test_models_match_the_original_with_winograd(parity_dir, synth_state_dict, model_name, classes, fixture, inputs):
    model = build_model(model_name, classes)
    load_state_dict(model, synth_state_dict(fixture))
    data = np.load(parity_dir / "modules" / f"{fixture}.npz")
    args = [_nhwc(data[k]) for k in inputs]
    want = data["logits"]
    got = _forward(model, "winograd", *args)
    err = float(np.abs(got - want).max())
    assert err <= 1e-3 * float(np.abs(want).max()), f"{fixture}: max abs err {err}"
    # and it is the other algorithm: the direct forward differs from it, by float32 rounding only
    direct = _forward(model, "direct", *args)
    assert 0 < float(np.abs(got - direct).max()) <= 1e-4 * float(np.abs(direct).max())
