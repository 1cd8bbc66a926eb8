"""RoI Align equal to ``torchvision.ops.roi_align(spatial_scale=1, sampling_ratio=-1, aligned=False)`` (NHWC).

For an axis-aligned box, RoI Align is separable: every output value is the average over a regular
``gh x gw`` grid of bilinear samples, and a bilinear sample at ``(y, x)`` weighs rows by ``wy(y)``
and columns by ``wx(x)`` independently (a sample outside ``[-1, size]`` in either coordinate is zero,
which is also separable). So each box gives a sparse row-interpolation matrix ``Ry [oh, H]`` and a
column-interpolation matrix ``Rx [ow, W]``, each with at most ``2 * samples`` non-zeros per row, and

    out[k] = Ry_k @ feat @ Rx_k^T        (per channel).

The matrices are kept in sparse form (indices + weights) and applied as two gather-and-reduce
passes over a static window of the feature map that covers the box; ``method="matmul"`` instead
densifies them over the window and uses two ``einsum`` (more FLOPs, may suit accelerators).

The adaptive sampling count ``ceil(roi_size / out_size)`` depends on the box values, so a static
upper bound ``max_samples = (max_gh, max_gw)`` sets the array shapes; samples beyond a box's own
count are masked out. With concrete (non-traced) boxes it is computed automatically.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["required_samples", "roi_align", "roi_align_batched"]

_PREC = jax.lax.Precision.HIGHEST


def required_samples(boxes: np.ndarray, output_hw: tuple[int, int]) -> tuple[int, int]:
    """Sampling counts ``(gh, gw)`` torchvision would use for the largest of ``boxes`` ``[K, 4]`` (concrete).

    Computed in float32 exactly like torchvision: ``ceil(max(x1 - x0, 1) / ow)``.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if b.shape[0] == 0:
        return 1, 1
    oh, ow = np.float32(output_hw[0]), np.float32(output_hw[1])
    rh = np.maximum(b[:, 3] - b[:, 1], np.float32(1.0))
    rw = np.maximum(b[:, 2] - b[:, 0], np.float32(1.0))
    return int(np.ceil(rh / oh).max()), int(np.ceil(rw / ow).max())


def _resolve_max_samples(
    boxes: jax.Array | np.ndarray, output_hw: tuple[int, int], max_samples: tuple[int, int] | None
) -> tuple[int, int]:
    concrete = not isinstance(boxes, jax.core.Tracer)
    if max_samples is None:
        if not concrete:
            raise ValueError(
                "roi_align: boxes are traced, so the static sampling bound cannot be computed; pass "
                "max_samples=(gh, gw) >= ceil(box_size / output_size) for every box (see required_samples)."
            )
        return required_samples(np.asarray(boxes), output_hw)
    ms = (int(max_samples[0]), int(max_samples[1]))
    if ms[0] < 1 or ms[1] < 1:
        raise ValueError(f"roi_align: max_samples must be >= 1, got {max_samples}")
    if concrete:
        need = required_samples(np.asarray(boxes), output_hw)
        if need[0] > ms[0] or need[1] > ms[1]:
            raise ValueError(f"roi_align: boxes need {need} samples per bin but max_samples={ms}")
    return ms


def _exact_int_product(ints: jax.Array, x: jax.Array, bound: int) -> jax.Array:
    """``float32(ints * x)`` rounded once, immune to fused multiply-add contraction of the caller's sum.

    XLA (CPU and GPU) contracts ``start + o * bin`` into an FMA, whose single rounding moves sample
    positions by an ulp (~1e-4 at 1000 px) away from torchvision's separately rounded product. Splitting
    ``x`` into a high part with ``24 - k`` significant bits and the rest (``k`` bits, ``ints < 2**k``)
    makes both partial products exact, so their sum is the correctly rounded product whether or not
    the compiler fuses it, and the result is an addition (not a product) that cannot fuse further.
    """
    k = max(int(bound - 1).bit_length(), 1)
    if k > 12:
        return ints * x
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    hi = jax.lax.bitcast_convert_type(bits & jnp.uint32((0xFFFFFFFF << k) & 0xFFFFFFFF), jnp.float32)
    lo = x - hi
    return ints * hi + ints * lo


def _axis_weights(start: jax.Array, end: jax.Array, n_out: int, n_in: int, max_s: int) -> tuple[jax.Array, jax.Array]:
    """Sparse interpolation matrix of one axis: ``(indices [n_out, 2*max_s] int32, weights [n_out, 2*max_s])``.

    Row ``o`` of the dense matrix is ``sum_t weights[o, t] * onehot(indices[o, t])``; it averages the
    bilinear weights of the box's ``g = ceil(size / n_out)`` sample positions in output bin ``o``.
    Arithmetic follows torchvision's float32 kernel.
    """
    f32 = jnp.float32
    # XLA may rewrite a division by a constant into a multiplication by its reciprocal, which rounds
    # differently from torchvision's float32 division; the barrier keeps the divisor opaque.
    n_out_f = jax.lax.optimization_barrier(jnp.asarray(n_out, dtype=f32))
    size = jnp.maximum(end - start, f32(1.0))
    bin_size = size / n_out_f
    grid = jnp.ceil(size / n_out_f)  # float, >= 1
    o = jnp.arange(n_out, dtype=f32)[:, None]
    i = jnp.arange(max_s, dtype=f32)[None, :]
    offset = _exact_int_product(o, bin_size, n_out)
    pos = (start + offset) + (i + f32(0.5)) * bin_size / grid  # [n_out, max_s]
    valid = (i < grid) & (pos >= f32(-1.0)) & (pos <= f32(n_in))
    pos = jnp.maximum(pos, f32(0.0))
    low = jnp.floor(pos).astype(jnp.int32)
    at_end = low >= n_in - 1
    low = jnp.where(at_end, n_in - 1, low)
    high = jnp.where(at_end, n_in - 1, low + 1)
    pos = jnp.where(at_end, low.astype(f32), pos)
    frac = pos - low.astype(f32)
    scale = jnp.where(valid, f32(1.0) / grid, f32(0.0))
    idx = jnp.concatenate([low, high], axis=1)
    w = jnp.concatenate([(f32(1.0) - frac) * scale, frac * scale], axis=1)
    return idx, w


def _window(start: jax.Array, n_in: int, win: int) -> jax.Array:
    """First index (int32) of a static ``win``-long window that holds every index a box starting at ``start`` reads."""
    first = jnp.floor(jnp.maximum(start, 0.0)).astype(jnp.int32)
    return jnp.clip(first, 0, n_in - win)


def _roi_align_one(
    feat: jax.Array,
    box: jax.Array,
    output_hw: tuple[int, int],
    max_samples: tuple[int, int],
    method: str,
    full_hw: tuple[int, int] | None = None,
    origin: jax.Array | None = None,
) -> jax.Array:
    """RoI Align of one box ``[4]`` on ``feat [H, W, C]`` -> ``[oh, ow, C]``.

    With ``full_hw`` and ``origin`` (``[2]`` int32, traced), ``feat`` is the window of a ``full_hw`` map that
    starts at ``origin``: every position and weight is computed in the full map (the same numbers as
    on the whole map) and only the reads are shifted; the window must hold the box's read window.
    """
    h_in, w_in = feat.shape[:2] if full_hw is None else full_hw
    oh, ow = output_hw
    box = box.astype(jnp.float32)
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    iy, wy = _axis_weights(y0, y1, oh, h_in, max_samples[0])
    ix, wx = _axis_weights(x0, x1, ow, w_in, max_samples[1])
    # Rows read lie in [floor(max(y0, 0)), floor(y0 + size) + 1] with size <= samples * oh: a static window.
    win_h = min(h_in, max_samples[0] * oh + 4)
    win_w = min(w_in, max_samples[1] * ow + 4)
    sy = _window(y0, h_in, win_h)
    sx = _window(x0, w_in, win_w)
    start = (sy, sx) if origin is None else (sy - origin[0], sx - origin[1])
    fw = jax.lax.dynamic_slice(feat, (*start, jnp.int32(0)), (win_h, win_w, feat.shape[2]))
    iy = jnp.clip(iy - sy, 0, win_h - 1)
    ix = jnp.clip(ix - sx, 0, win_w - 1)
    wy = wy.astype(feat.dtype)
    wx = wx.astype(feat.dtype)
    if method == "gather":
        rows = jnp.einsum("ot,otwc->owc", wy, jnp.take(fw, iy, axis=0), precision=_PREC)  # [oh, win_w, C]
        return jnp.einsum("pt,optc->opc", wx, jnp.take(rows, ix, axis=1), precision=_PREC)
    if method == "matmul":
        ry = jnp.einsum("ot,oth->oh", wy, jax.nn.one_hot(iy, win_h, dtype=feat.dtype), precision=_PREC)
        rx = jnp.einsum("pt,ptw->pw", wx, jax.nn.one_hot(ix, win_w, dtype=feat.dtype), precision=_PREC)
        rows = jnp.einsum("oh,hwc->owc", ry, fw, precision=_PREC)
        return jnp.einsum("pw,owc->opc", rx, rows, precision=_PREC)
    raise ValueError(f"roi_align: unknown method {method!r} (use 'gather' or 'matmul')")


def _prepare(feat, boxes, output_hw, max_samples):
    """Shared argument handling: static ``output_hw`` and sampling bound, float ``feat``, float32 ``[K, 4]`` boxes."""
    output_hw = (int(output_hw[0]), int(output_hw[1]))
    ms = _resolve_max_samples(boxes, output_hw, max_samples)
    feat = jnp.asarray(feat)
    if not jnp.issubdtype(feat.dtype, jnp.floating):
        feat = feat.astype(jnp.float32)
    return feat, jnp.asarray(boxes, dtype=jnp.float32).reshape(-1, 4), output_hw, ms


def roi_align(
    feat: jax.Array,
    boxes: jax.Array | np.ndarray,
    output_hw: tuple[int, int],
    *,
    max_samples: tuple[int, int] | None = None,
    method: Literal["gather", "matmul"] = "gather",
    batch_size: int | None = 1,
    full_hw: tuple[int, int] | None = None,
    origin: jax.Array | np.ndarray | None = None,
) -> jax.Array:
    """``torchvision.ops.roi_align(feat, [boxes], output_hw, 1.0, -1, aligned=False)`` for one image.

    Args:
        feat: ``[H, W, C]`` feature map of one image.
        boxes: ``[K, 4]`` float boxes ``(x0, y0, x1, y1)`` in pixels of ``feat`` (spatial scale 1).
        output_hw: static output size ``(oh, ow)``.
        max_samples: static upper bound ``(gh, gw)`` of the per-bin sampling counts
            ``ceil(max(y1 - y0, 1) / oh)`` and ``ceil(max(x1 - x0, 1) / ow)`` over all boxes. Required
            when ``boxes`` is traced; computed from the values otherwise. A bound that is too small gives
            wrong results for traced boxes (checked, with an error, for concrete ones).
        method: ``"gather"`` (sparse separable passes, fewest FLOPs) or ``"matmul"`` (dense einsums).
        batch_size: boxes processed at once (``jax.lax.map`` batch size; ``None`` = all, via ``vmap``).
            Peak memory grows with it.
        full_hw, origin: ``feat`` is only the window ``[origin, origin + feat.shape[:2])`` (``origin``: ``[2]``
            int, may be traced) of a ``full_hw`` map and ``boxes`` are in full-map pixels: the result equals
            RoI Align on the full map (bit for bit) as long as the window holds every box's read window
            (tiled inference). ``max_samples`` is then required.

    Returns:
        ``[K, oh, ow, C]`` array.
    """
    if feat.ndim != 3:
        raise ValueError(f"roi_align: feat must be [H, W, C], got shape {feat.shape}")
    if (full_hw is None) != (origin is None) or (full_hw is not None and max_samples is None):
        raise ValueError("roi_align: pass full_hw and origin together, with max_samples")
    feat, boxes, output_hw, ms = _prepare(feat, boxes, output_hw, max_samples)
    if full_hw is None:
        return _roi_align_impl(feat, boxes, output_hw, ms, method, batch_size)
    full_hw = (int(full_hw[0]), int(full_hw[1]))
    return _roi_align_impl(feat, boxes, output_hw, ms, method, batch_size, full_hw, jnp.asarray(origin, jnp.int32))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _roi_align_impl(
    feat: jax.Array,
    boxes: jax.Array,
    output_hw: tuple[int, int],
    max_samples: tuple[int, int],
    method: str,
    batch_size: int | None,
    full_hw: tuple[int, int] | None = None,
    origin: jax.Array | None = None,
) -> jax.Array:
    def one(box: jax.Array) -> jax.Array:
        return _roi_align_one(feat, box, output_hw, max_samples, method, full_hw, origin)

    if batch_size is None or batch_size >= boxes.shape[0]:
        return jax.vmap(one)(boxes)
    return jax.lax.map(one, boxes, batch_size=batch_size if batch_size > 1 else None)


def roi_align_batched(
    feat: jax.Array,
    boxes: jax.Array | np.ndarray,
    output_hw: tuple[int, int],
    max_samples: tuple[int, int] | None = None,
    *,
    method: Literal["gather", "matmul"] = "gather",
) -> jax.Array:
    """One box per image: ``out[b] = roi_align(feat[b], boxes[b:b+1], output_hw)[0]``.

    Args:
        feat: ``[B, H, W, C]`` feature maps.
        boxes: ``[B, 4]`` boxes ``(x0, y0, x1, y1)`` in pixels of ``feat``.
        output_hw: static output size ``(oh, ow)``.
        max_samples: static sampling bound as in :func:`roi_align` (required when ``boxes`` is traced).
        method: as in :func:`roi_align`.

    Returns:
        ``[B, oh, ow, C]`` array.
    """
    if feat.ndim != 4:
        raise ValueError(f"roi_align_batched: feat must be [B, H, W, C], got shape {feat.shape}")
    feat, boxes, output_hw, ms = _prepare(feat, boxes, output_hw, max_samples)
    return _roi_align_batched_impl(feat, boxes, output_hw, ms, method)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _roi_align_batched_impl(
    feat: jax.Array, boxes: jax.Array, output_hw: tuple[int, int], max_samples: tuple[int, int], method: str
) -> jax.Array:
    return jax.vmap(lambda f, b: _roi_align_one(f, b, output_hw, max_samples, method))(feat, boxes)
