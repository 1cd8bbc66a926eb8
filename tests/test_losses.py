"""magnet_jax.losses against the original's OHEM loss (parity/ops.npz) and behaviour checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.losses import cross_entropy, kth_smallest_nonnegative, ohem_cross_entropy, pixel_cross_entropy
from magnet_jax.ops import resize_bilinear

OHEM_TOL = 1e-4  # parity README: OHEM loss and gradient


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def ohem_cases(npz: dict) -> list[int]:
    found = sorted({int(k.split("_")[1]) for k in npz if k.startswith("ohem_")})
    assert found, "no ohem_* entries in ops.npz"
    return found


def test_ohem_parity(ops_npz):
    for i in ohem_cases(ops_npz):
        score = nhwc(ops_npz[f"ohem_{i}_score"])
        target = ops_npz[f"ohem_{i}_target"]
        min_kept = int(ops_npz[f"ohem_{i}_min_kept"])
        ref_loss = float(ops_npz[f"ohem_{i}_loss"])
        ref_grad = nhwc(ops_npz[f"ohem_{i}_grad"])
        fn = jax.jit(jax.value_and_grad(lambda s, t, m=min_kept: ohem_cross_entropy(s, t, min_kept=m)))
        loss, grad = fn(score, target)
        assert abs(float(loss) - ref_loss) <= OHEM_TOL, (i, float(loss), ref_loss)
        grad_err = float(np.max(np.abs(np.asarray(grad) - ref_grad)))
        assert grad_err <= OHEM_TOL, (i, grad_err)
        # the gradient is ~1e-4 in size, so also hold it to a relative bound
        assert grad_err <= 1e-3 * float(np.max(np.abs(ref_grad))), (i, grad_err)


def test_kth_smallest_is_the_sorted_element():
    rng = np.random.default_rng(3)
    values = rng.random(5000).astype(np.float32) ** 3  # dense near 0: neighbouring bit patterns
    values[::7] = np.inf  # unlabelled pixels
    values[1::50] = 0.0
    values[2::11] = values[5]  # a tie group
    values[3] = np.float32(1e-40)  # subnormal
    ordered = np.sort(values)
    fn = jax.jit(kth_smallest_nonnegative)
    for k in (0, 1, 99, 100, 713, 2500, 4285, 4286, 4999):
        assert np.float32(fn(jnp.asarray(values), jnp.int32(k))) == ordered[k], k
    assert np.float32(fn(jnp.full((4,), np.inf, np.float32), jnp.int32(0))) == np.inf


def _ohem_numpy(logits: np.ndarray, labels: np.ndarray, ignore: int, thresh: float, min_kept: int) -> float:
    """The original's algorithm, transcribed with boolean indexing (float64)."""
    x = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    t = labels.reshape(-1)
    x = x - x.max(axis=1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    valid = t != ignore
    safe = np.where(valid, t, 0)
    ce = -logp[np.arange(len(t)), safe][valid]
    p = np.exp(logp[np.arange(len(t)), safe])[valid]
    order = np.argsort(p, kind="stable")
    p, ce = p[order], ce[order]
    threshold = max(p[min(max(min_kept, 1), p.size - 1)], thresh)
    return float(ce[p < threshold].mean())


def test_ohem_matches_transcription():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((2, 9, 11, 5)) * 2.5).astype(np.float32)
    labels = rng.integers(0, 5, (2, 9, 11))
    labels[0, :3] = 255
    for min_kept in (1, 10, 50, 150, 10**6):
        for thresh in (0.7, 0.2):
            ref = _ohem_numpy(logits, labels, 255, thresh, min_kept)
            got = float(ohem_cross_entropy(logits, labels, thresh=thresh, min_kept=min_kept))
            assert abs(got - ref) <= 1e-5, (min_kept, thresh, got, ref)


def test_cross_entropy_behaviour():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 6, 7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (2, 6, 7))
    labels[1, 2:4] = 255
    valid = labels != 255
    x = logits.astype(np.float64)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    ref = nll[valid].mean()
    assert abs(float(jax.jit(cross_entropy)(logits, labels)) - ref) <= 1e-5
    per_pixel, v, _ = pixel_cross_entropy(logits, labels)
    np.testing.assert_array_equal(np.asarray(v), valid)
    np.testing.assert_allclose(np.asarray(per_pixel), np.where(valid, nll, 0.0), atol=1e-5)
    # gradient of the mean: (softmax - onehot) / n_valid on labelled pixels, zero elsewhere
    grad = np.asarray(jax.grad(cross_entropy)(logits, labels))
    soft = np.exp(logp)
    onehot = np.eye(4)[np.where(valid, labels, 0)]
    ref_grad = np.where(valid[..., None], soft - onehot, 0.0) / valid.sum()
    np.testing.assert_allclose(grad, ref_grad, atol=1e-6)


def test_cross_entropy_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 5, 8, 6)).astype(np.float32)
    labels = rng.integers(0, 6, (2, 5, 8))
    labels[0, 0] = 255
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(nhwc_to_nchw(logits)), torch.from_numpy(labels), ignore_index=255
    ).item()
    assert abs(float(cross_entropy(logits, labels)) - ref) <= 1e-5


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def test_losses_edge_cases():
    logits = jnp.zeros((1, 4, 4, 3))
    ignored = jnp.full((1, 4, 4), 255)
    for fn in (cross_entropy, ohem_cross_entropy):
        value, grad = jax.value_and_grad(fn)(logits, ignored)
        assert float(value) == 0.0 and not bool(jnp.any(grad != 0))
    # every pixel confident (p >= threshold): nothing is selected, the loss is 0 (the original gives NaN)
    confident = jnp.zeros((1, 4, 4, 3)).at[..., 1].set(20.0)
    assert float(ohem_cross_entropy(confident, jnp.ones((1, 4, 4), jnp.int32), min_kept=0)) == 0.0
    # scores smaller than the labels are upsampled (bilinear, align_corners=False) first
    rng = np.random.default_rng(3)
    small = rng.standard_normal((1, 3, 4, 3)).astype(np.float32)
    labels = rng.integers(0, 3, (1, 6, 8))
    up = resize_bilinear(small, (6, 8), align_corners=False)
    assert abs(float(ohem_cross_entropy(small, labels)) - float(ohem_cross_entropy(up, labels))) <= 1e-6
    assert abs(float(cross_entropy(small, labels)) - float(cross_entropy(up, labels))) <= 1e-6
