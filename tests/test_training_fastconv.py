"""`training.fastconv.conv2d` equals `lax.conv_general_dilated` in value and gradients, and
`fast_conv_gradients` swaps it into `layers.Conv2d` only inside its block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.training.fastconv import conv2d, fast_conv_gradients

CASES = [  # kernel, stride, padding, dilation, cin, cout
    (3, 1, 1, 1, 8, 16),
    (3, 2, 1, 1, 5, 7),
    (3, 1, 2, 2, 6, 6),
    (1, 1, 0, 1, 8, 16),
    (1, 2, 0, 1, 8, 16),
    (7, 2, 3, 1, 3, 8),
]


@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_lax(case):
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
    g_new = jax.jit(jax.grad(loss(lambda x, w: conv2d(x, w, **kw)), (0, 1)))(x, w)
    for a, b in zip(g_new, g_ref, strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6 * scale + 1e-6, rtol=0)


def test_patch_is_scoped():
    from magnet_jax.models import layers

    original = layers.Conv2d.__call__
    with fast_conv_gradients():
        assert layers.Conv2d.__call__ is not original
    assert layers.Conv2d.__call__ is original
    with fast_conv_gradients(enabled=False):
        assert layers.Conv2d.__call__ is original
