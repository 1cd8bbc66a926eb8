"""The original training log's "aggregated" view (jit-able); confusion matrices are
`metrics.confusion_matrix_jax`, certainty `ops.patches.certainty`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from magnet_jax.ops.patches import certainty


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
