"""`ops.conv.conv2d` equals `lax.conv_general_dilated` in value and in gradients under both
weight-gradient rules, and the rule is read at trace time from `weight_gradient_rule`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.ops.conv import conv2d, weight_gradient_rule

CASES = [  # kernel, stride, padding, dilation, cin, cout
    (3, 1, 1, 1, 8, 16),
    (3, 2, 1, 1, 5, 7),
    (3, 1, 2, 2, 6, 6),
    (1, 1, 0, 1, 8, 16),
    (1, 2, 0, 1, 8, 16),
    (7, 2, 3, 1, 3, 8),
]


@pytest.mark.parametrize("rule", ["im2col", "native"])
@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_lax(case, rule):
    k, s, p, d, cin, cout = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 19, 22, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, cin, cout)) * 0.2, jnp.float32)
    kw = dict(stride=(s, s), padding=((p, p), (p, p)), dilation=(d, d))

    def ref(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (s, s), ((p, p), (p, p)), rhs_dilation=(d, d), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def loss(fn):
        return lambda x, w: jnp.sum(jnp.sin(fn(x, w)))

    np.testing.assert_allclose(conv2d(x, w, **kw), ref(x, w), atol=1e-5, rtol=1e-5)
    g_ref = jax.grad(loss(ref), (0, 1))(x, w)
    with weight_gradient_rule(rule):
        g_new = jax.jit(jax.grad(loss(lambda x, w: conv2d(x, w, **kw)), (0, 1)))(x, w)
    for a, b in zip(g_new, g_ref, strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6 * scale + 1e-6, rtol=0)


def _has_scan(x, w) -> bool:
    # a new function each time: JAX caches traces per function, and the rule is read while tracing
    grad = jax.grad(lambda w: jnp.sum(conv2d(x, w, padding=((1, 1), (1, 1)))))
    return "scan" in str(jax.make_jaxpr(grad)(w))


def test_rule_is_read_at_trace_time():
    x = jnp.ones((1, 8, 8, 4), jnp.float32)
    w = jnp.ones((3, 3, 4, 2), jnp.float32)
    with weight_gradient_rule("im2col"):
        assert _has_scan(x, w)  # the chunked im2col weight gradient
    with weight_gradient_rule("native"):
        assert not _has_scan(x, w)
    assert _has_scan(x, w) == (jax.default_backend() == "cpu")  # "auto"
    with pytest.raises(ValueError, match="weight-gradient rule"), weight_gradient_rule("fast"):
        pass


def test_conv2d_layer_uses_the_rule():
    from flax import nnx

    from magnet_jax.models.layers import Conv2d

    graphdef, params = nnx.split(Conv2d(4, 6, 3, padding=1, rngs=nnx.Rngs(0)))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 7, 4)), jnp.float32)

    def grad_kernel(rule):
        def loss(p):
            return jnp.sum(jnp.tanh(nnx.merge(graphdef, p)(x)))

        with weight_gradient_rule(rule):
            jaxpr = str(jax.make_jaxpr(jax.grad(loss))(params))
            return jax.grad(loss)(params)["kernel"][...], "scan" in jaxpr

    (g_im2col, scan_im2col), (g_native, scan_native) = grad_kernel("im2col"), grad_kernel("native")
    assert scan_im2col and not scan_native
    np.testing.assert_allclose(g_im2col, g_native, rtol=0, atol=2e-6 * float(jnp.max(jnp.abs(g_native))))
