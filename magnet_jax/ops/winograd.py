"""3x3 stride-1 convolution by Winograd's minimal filtering F(4x4, 3x3) (NHWC / HWIO, float32).

Each 4x4 block of outputs comes from a 6x6 input tile: `Y = A^T [(G g G^T) * (B^T d B)] A` (Lavin &
Gray 2016). Over all tiles that is 36 independent `[tiles, Cin] @ [Cin, Cout]` products (one batched
dot) doing 4x fewer multiply-adds than the direct convolution, plus the input and output transforms
(sparse small-integer matrices, applied separably: rows, then columns). The price is float32
rounding: ~1e-5 of max|output| per layer (F(2x2, 3x3) gave ~2e-6 but only 2.25x fewer products, and
ran 1.1-1.7x where this runs 1.4-2.4x), a hundred times inside the parity tolerance
(`tests/test_ops_winograd.py` holds the models to the original's outputs with it).

It pays where the products dominate the transforms' memory traffic: both channel counts >= 64 and at
least 64x64 output pixels over the batch. Measured on a 2-core AVX2 CPU against XLA's convolution
(`benchmarks/ab_winograd.py`, interleaved, median of 7), for the layers of the three models:
270->512 at 128x256 2.39x, 256->256 at 127x127 2.04x, 64->64 at 128x256 1.91x, 256->128 at 127x127
1.90x, 64->64 at 127x127 1.76x, 64->64 at 508x508 1.63x, 128->128 and 256->256 at 64x64 1.58x and
1.57x, 64->64 at 512x256 1.38x; but 256->256 at 32x32 0.88x, 512->512 at 16x16 0.20x, 32->32 at
508x508 0.85x, 512->7 at 127x127 0.67x, 18->18 at 128x256 0.71x. `winograd_pays` encodes that rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MIN_CHANNELS = 64  # both Cin and Cout (below: the transforms' traffic outweighs the saved products)
MIN_OUTPUT_PIXELS = 64 * 64  # over the batch (below: the 36 products are too small to run fast)
TILE = 4  # outputs per tile side: F(4x4, 3x3), input tiles of 6x6

# Lavin & Gray's F(4x4, 3x3) matrices (interpolation points 0, +-1, +-2, infinity).
_BT = np.array(  # input transform B^T (6x6): small integers
    [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float32,
)  # fmt: skip
_G = np.array(  # kernel transform G (6x3)
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
     [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64,
)  # fmt: skip
_AT = np.array(  # output transform A^T (4x6): powers of two
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float32,
)  # fmt: skip

Padding = tuple[tuple[int, int], tuple[int, int]]


def winograd_eligible(w_shape: tuple[int, ...], stride, dilation, groups: int) -> bool:
    """Whether the convolution is one this module computes: 3x3 kernel, stride 1, no dilation, no groups."""
    return tuple(w_shape[:2]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1


def winograd_pays(x_shape: tuple[int, ...], w_shape: tuple[int, ...], padding: Padding) -> bool:
    """The measured rule (module docstring): Cin, Cout >= 64 and >= 64x64 output pixels over the batch."""
    b, h, w, cin = x_shape
    ho, wo = h + sum(padding[0]) - 2, w + sum(padding[1]) - 2
    return min(cin, w_shape[-1]) >= MIN_CHANNELS and b * ho * wo >= MIN_OUTPUT_PIXELS


def _combine(matrix: np.ndarray, parts: list[jax.Array], axis: int) -> jax.Array:
    """`stack([sum_j matrix[i, j] * parts[j] for i], axis)`, skipping zero terms (the matrices are sparse)."""
    rows = []
    for coefficients in matrix:
        terms = []
        for c, part in zip(coefficients.tolist(), parts, strict=True):
            if c != 0:
                terms.append(part if c == 1 else -part if c == -1 else part * np.float32(c))
        acc = terms[0]
        for t in terms[1:]:
            acc = acc + t
        rows.append(acc)
    return jnp.stack(rows, axis)


def _input_transform(t: jax.Array, axis: int, n: int) -> jax.Array:
    """B^T along `axis` over `n` tiles of 6 at stride 4: `[..., 4n + 2, ...]` -> `[6, ..., n, ...]`."""
    taps = [jax.lax.slice_in_dim(t, j, j + TILE * (n - 1) + 1, TILE, axis) for j in range(TILE + 2)]
    return _combine(_BT, taps, 0)


def _output_transform(m: jax.Array, axis: int) -> jax.Array:
    """A^T along `axis` (6 -> 4), the result stacked at `axis`."""
    parts = [jax.lax.index_in_dim(m, i, axis, keepdims=False) for i in range(TILE + 2)]
    return _combine(_AT, parts, axis)


def conv3x3_winograd(x: jax.Array, w: jax.Array, padding: Padding = ((1, 1), (1, 1))) -> jax.Array:
    """`x [B, H, W, Cin]`, `w [3, 3, Cin, Cout]` -> `[B, H', W', Cout]` (stride 1, zero `padding`), no bias.

    The value of `lax.conv_general_dilated` up to float32 rounding (module docstring).
    """
    b, h, wd, cin = x.shape
    cout = w.shape[-1]
    (pt, pb), (pl, pr) = padding
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    if ho <= 0 or wo <= 0:
        raise ValueError(f"conv3x3_winograd: input {h}x{wd} with padding {padding} leaves no output")
    a = TILE + 2
    th, tw = -(-ho // TILE), -(-wo // TILE)
    # zero rows/columns up to whole tiles: the extra outputs are cut off below
    xp = jnp.pad(x, ((0, 0), (pt, TILE * th + 2 - h - pt), (pl, TILE * tw + 2 - wd - pl), (0, 0)))
    v = _input_transform(xp, 1, th)  # [6 (tile row u), B, th, W', Cin]
    v = _input_transform(v, 3, tw)  # [6 (tile column v), 6 (u), B, th, tw, Cin]
    g = jnp.asarray(_G.astype(np.float32))
    u = jnp.einsum("ai,ijco,bj->baco", g, w.astype(jnp.float32), g, precision=jax.lax.Precision.HIGHEST)
    prod = jnp.einsum("tpc,tco->tpo", v.reshape(a * a, b * th * tw, cin), u.reshape(a * a, cin, cout))
    prod = prod.reshape(a, a, b, th, tw, cout)  # [v, u, B, th, tw, Cout]
    rows = _output_transform(prod, 1)  # [v, 4 (output row), B, th, tw, Cout]
    y = _output_transform(rows, 0)  # [4 (output column), 4 (row), B, th, tw, Cout]
    y = y.transpose(2, 3, 1, 4, 0, 5).reshape(b, TILE * th, TILE * tw, cout)
    return y[:, :ho, :wo, :].astype(x.dtype)
