"""Building blocks of the MagNet stages against the original's behaviour (ops fixtures, PyTorch)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.inference import stages
from magnet_jax.inference.plan import StagePlan
from magnet_jax.inference.topk import topk_indices, torch_topk_indices
from magnet_jax.ops.point_sample import point_sample


def _stage_for(ratios: np.ndarray, size_wh: tuple[int, int]) -> StagePlan:
    return StagePlan(
        index=1,
        scale_wh=size_wh,
        ratios=np.asarray(ratios, np.float64),
        crops_px=(),
        k=len(ratios),
        budget=0,
        smooth_kernel=3,
        zero_error_in_mask=False,
        filter_points_by_mask=False,
    )


@pytest.mark.parametrize("hw", [(37, 53), (96, 2448 // 8), (35, 1000)])
def test_sampled_mask_matches_point_sample(hw):
    h, w = hw
    rng = np.random.default_rng(1)
    mask = np.zeros((h, w), bool)
    mask[5 : h - 7, 9 : w - 4] = True
    mask[rng.random((h, w)) < 0.05] = True
    idx = np.arange(h * w)
    w_step, h_step = 1.0 / w, 1.0 / h
    px = ((idx % w).astype(np.float32) * np.float32(w_step) + np.float32(w_step / 2.0)).astype(np.float32)
    py = ((idx // w).astype(np.float32) * np.float32(h_step) + np.float32(h_step / 2.0)).astype(np.float32)
    want = np.asarray(point_sample(jnp.asarray(mask, jnp.float32)[..., None], jnp.stack([px, py], 1)))[:, 0] != 0
    got = np.asarray(stages.sampled_mask(jnp.asarray(mask))).reshape(-1)
    np.testing.assert_array_equal(got, want)


def test_select_top_mask_simple():
    v = jnp.array([0.5, 0.1, 0.5, 0.9, 0.5, 0.0])
    got = np.asarray(stages.select_top_mask(v, 3, torch_ties=False))
    np.testing.assert_array_equal(got, [True, False, True, True, False, False])  # ties: lower index
    assert np.asarray(stages.select_top_mask(v, 6, torch_ties=False)).all()
    assert not np.asarray(stages.select_top_mask(v, 0, torch_ties=False)).any()
    neg = jnp.array([-1.0, -0.5, 2.0, -3.0])
    np.testing.assert_array_equal(np.asarray(stages.select_top_mask(neg, 2, torch_ties=False)), [0, 1, 1, 0])
    np.testing.assert_array_equal(np.sort(np.asarray(topk_indices(v, 2))), [0, 3])


def _tie_heavy(rng, n, frac_nonzero=0.1):
    x = np.zeros(n, np.float32)
    m = rng.random(n) < frac_nonzero
    x[m] = rng.random(int(m.sum())).astype(np.float32) + 0.1
    return x


@pytest.mark.torch
def test_torch_topk_replay_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    fn = jax.jit(torch_topk_indices, static_argnums=1)
    cases = []
    for trial in range(6):  # two of each kind: every new (n, k) compiles twice
        n = int(rng.integers(5, 3000))
        k = int(rng.integers(max(1, n // 64 + 1), n))
        kind = trial % 3
        if kind == 0:
            x = rng.random(n).astype(np.float32)
        elif kind == 1:
            x = rng.integers(0, 4, n).astype(np.float32)
        else:
            x = _tie_heavy(rng, n)
        cases.append((x, k))
    cases.append((_tie_heavy(rng, 131072), 58982))
    for x, k in cases:
        want = torch.topk(torch.from_numpy(x)[None], k=k, dim=1, sorted=False)[1][0].numpy()
        got = np.asarray(fn(jnp.asarray(x), k))
        np.testing.assert_array_equal(np.sort(got), np.sort(want))
        mask = np.asarray(stages.select_top_mask(jnp.asarray(x), k, torch_ties=True))
        np.testing.assert_array_equal(np.nonzero(mask)[0], np.sort(want))


def test_smooth_error_shapes_and_constant():
    e = jnp.full((40, 60), 0.25)
    out = stages.smooth_error(e, (20, 30), 3)
    assert out.shape == (40, 60)
    assert float(out[10, 10]) == 0.25 and float(out[0, 0]) == 0.0  # zero padding at the corner (5 of 9 zeros)


def test_stage_plan_is_frozen():
    st = _stage_for(np.zeros((1, 4)), (8, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.k = 3
