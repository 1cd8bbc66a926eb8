"""The refiner's training loss is the original's OHEM cross-entropy: loss and gradient equal the
fixtures made with the original `OhemCrossEntropy` (ops.npz `ohem_*`, NCHW scores)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax import losses


@pytest.mark.parametrize("case", [0, 1])
def test_ohem_matches_original(ops_npz, case):
    score = ops_npz[f"ohem_{case}_score"]  # [B, C, H, W]
    target = ops_npz[f"ohem_{case}_target"].astype(np.int32)
    min_kept = int(ops_npz[f"ohem_{case}_min_kept"])
    logits = jnp.asarray(score.transpose(0, 2, 3, 1))

    def loss_fn(x):
        return losses.ohem_cross_entropy(x, jnp.asarray(target), ignore_label=255, thresh=0.7, min_kept=min_kept)

    loss, grad = jax.value_and_grad(loss_fn)(logits)
    np.testing.assert_allclose(float(loss), float(ops_npz[f"ohem_{case}_loss"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        np.asarray(grad).transpose(0, 3, 1, 2), ops_npz[f"ohem_{case}_grad"], atol=1e-4, rtol=0
    )
