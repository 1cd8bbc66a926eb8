"""jit-able pieces of the training steps: confusion matrices, certainty, the original's aggregation."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def confusion(labels: jax.Array, pred: jax.Array, num_classes: int, ignore_label: int) -> jax.Array:
    """`[n, n]` int32 confusion matrix (rows = ground truth) over pixels with 0 <= label < n, != ignore."""
    n = num_classes
    labels = labels.astype(jnp.int32)
    valid = (labels >= 0) & (labels < n) & (labels != ignore_label)
    idx = jnp.where(valid, labels * n + pred.astype(jnp.int32), n * n)
    counts = jnp.bincount(idx.reshape(-1), length=n * n + 1)[: n * n]
    return counts.reshape(n, n).astype(jnp.int32)


def certainty(probs: jax.Array) -> jax.Array:
    """Top-1 minus top-2 probability over the last (class) axis: `[..., C]` -> `[...]`."""
    if probs.shape[-1] < 2:
        return jnp.ones(probs.shape[:-1], probs.dtype)
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1]


def aggregate(crop_coarse: jax.Array, fine: jax.Array, refined: jax.Array) -> jax.Array:
    """The original training log's "aggregated" prediction `[B, H, W, C]`.

    The half of the pixels (per sample) with the highest `certainty(fine) * (1 -
    certainty(crop_coarse))` take the refiner's probabilities; the rest keep the coarse ones.
    This is MAGNET_SPEC.md section 4, the same product as inference's error score. (The released
    train.py multiplies the reverse pair, certainty(crop_coarse) * (1 - certainty(fine)), because its
    `calculate_uncertainty` returns the top-1 - top-2 margin. It is a logged metric only, so we keep
    the spec's.)
    """
    b, h, w, c = crop_coarse.shape
    score = (certainty(fine) * (1.0 - certainty(crop_coarse))).reshape(b, h * w)
    k = (h * w) // 2
    if k == 0:
        return crop_coarse
    _, idx = jax.lax.top_k(score, k)
    mask = jnp.zeros((b, h * w), bool).at[jnp.arange(b)[:, None], idx].set(True).reshape(b, h, w, 1)
    return jnp.where(mask, refined, crop_coarse)
