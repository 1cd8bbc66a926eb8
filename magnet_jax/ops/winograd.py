"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (NHWC / HWIO, float32).

Each 2x2 block of outputs comes from a 4x4 input tile: `Y = A^T [(G g G^T) * (B^T d B)] A`. Over all
tiles that is 16 independent `[tiles, Cin] @ [Cin, Cout]` products (one batched dot) instead of the
direct convolution's 9 taps: 2.25x fewer multiply-adds, plus the input and output transforms, which
are additions and subtractions only (B and A hold 0 and +-1; G holds 0, +-1/2 and 1, exact in binary
floating point). The error is that of reordered float32 sums: ~2e-6 of max|output| on the models'
layers (`tests/test_ops_conv.py`), far inside the parity tolerances.

It pays where the products dominate the transforms' memory traffic: both channel counts >= 64 and at
least 1024 output tiles (a 64x64 map at batch 1). Measured on a 2-core AVX2 CPU against XLA's own
convolution (`benchmarks/ab_winograd.py`, interleaved, median of 7), for the layers of the three
models: 270->512 at 128x256 1.75x, 256->256 at 127x127 1.65x, 256->256 at 64x64 1.48x, 128->128 at
64x64 1.45x, 64->64 at 128x256 1.43x, 256->128 at 127x127 1.41x, 64->64 at 127x127 1.34x, 64->64 at
508x508 1.21x; but 256->256 at 32x32 0.80x, 512->512 at 16x16 0.52x, 32->32 at 508x508 0.69x,
512->7 at 127x127 0.55x, 18->18 at 128x256 0.86x. `winograd_pays` encodes that rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MIN_CHANNELS = 64  # both Cin and Cout (below: the transforms' traffic outweighs the saved products)
MIN_TILES = 1024  # 2x2 output tiles over the batch (below: the 16 products are too small to run fast)

# G (4x3): the kernel transform U = G g G^T
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], np.float32)

Padding = tuple[tuple[int, int], tuple[int, int]]


def winograd_eligible(w_shape: tuple[int, ...], stride, dilation, groups: int) -> bool:
    """Whether the convolution is one this module computes: 3x3 kernel, stride 1, no dilation, no groups."""
    return tuple(w_shape[:2]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1


def winograd_pays(x_shape: tuple[int, ...], w_shape: tuple[int, ...], padding: Padding) -> bool:
    """The measured rule (module docstring): Cin, Cout >= 64 and >= 1024 output tiles."""
    b, h, w, cin = x_shape
    cout = w_shape[-1]
    ho, wo = h + sum(padding[0]) - 2, w + sum(padding[1]) - 2
    tiles = b * (-(-ho // 2)) * (-(-wo // 2))
    return min(cin, cout) >= MIN_CHANNELS and tiles >= MIN_TILES


def _input_transform(t: jax.Array, axis: int, n: int) -> jax.Array:
    """B^T along `axis` over tiles of 4 at stride 2 (`n` tiles): `[..., 2n + 2, ...]` -> `[4, ..., n, ...]`."""

    def tap(j: int) -> jax.Array:
        return jax.lax.slice_in_dim(t, j, j + 2 * n - 1, 2, axis)

    d0, d1, d2, d3 = tap(0), tap(1), tap(2), tap(3)
    return jnp.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3], 0)


def _output_transform(m: jax.Array, axis: int) -> jax.Array:
    """A^T along `axis` (size 4 -> 2): rows [1, 1, 1, 0] and [0, 1, -1, -1], stacked at `axis`."""
    m0, m1, m2, m3 = (jax.lax.index_in_dim(m, i, axis, keepdims=False) for i in range(4))
    return jnp.stack([m0 + m1 + m2, m1 - m2 - m3], axis)


def conv3x3_winograd(x: jax.Array, w: jax.Array, padding: Padding = ((1, 1), (1, 1))) -> jax.Array:
    """`x [B, H, W, Cin]`, `w [3, 3, Cin, Cout]` -> `[B, H', W', Cout]` (stride 1, zero `padding`), no bias.

    The value of `lax.conv_general_dilated` up to float32 summation order.
    """
    b, h, wd, cin = x.shape
    cout = w.shape[-1]
    (pt, pb), (pl, pr) = padding
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv3x3_winograd: input {h}x{wd} with padding {padding} leaves no output")
    th, tw = -(-ho // 2), -(-wo // 2)
    # zero rows/columns up to whole tiles: the extra outputs are cut off below
    xp = jnp.pad(x, ((0, 0), (pt, 2 * th + 2 - h - pt), (pl, 2 * tw + 2 - wd - pl), (0, 0)))
    v = _input_transform(xp, 1, th)  # [4 (tile row u), B, th, W', Cin]
    v = _input_transform(v, 3, tw)  # [4 (tile column v), 4 (u), B, th, tw, Cin]
    g = jnp.asarray(_G)
    u = jnp.einsum("ai,ijco,bj->baco", g, w.astype(jnp.float32), g, precision=jax.lax.Precision.HIGHEST)
    prod = jnp.einsum("tpc,tco->tpo", v.reshape(16, b * th * tw, cin), u.reshape(16, cin, cout))
    prod = prod.reshape(4, 4, b, th, tw, cout)  # [v, u, B, th, tw, Cout]
    rows = _output_transform(prod, 1)  # [v, 2 (output row), B, th, tw, Cout]
    y = _output_transform(rows, 0)  # [2 (output column), 2 (row), B, th, tw, Cout]
    y = y.transpose(2, 3, 1, 4, 0, 5).reshape(b, 2 * th, 2 * tw, cout)
    return y[:, :ho, :wo, :].astype(x.dtype)
