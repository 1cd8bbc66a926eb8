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
from magnet_jax.ops.resize import resize_bilinear


@pytest.mark.parametrize("src,dst", [((7, 9), (20, 31)), ((40, 33), (13, 12)), ((16, 16), (16, 40))])
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_taps_equals_dense_resize(src, dst, align_corners):
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, *src, 3))
    got = stages.resize_bilinear_taps(x, dst, align_corners)
    want = resize_bilinear(x, dst, align_corners)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_certainty_matches_fixture(ops_npz):
    probs = np.transpose(ops_npz["certainty_in"], (0, 2, 3, 1))
    got = stages.certainty(jnp.asarray(probs))
    np.testing.assert_allclose(np.asarray(got), ops_npz["certainty_out"][:, 0], atol=1e-6)


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


def test_ensemble_reference_matches_fixture(ops_npz):
    patches = np.transpose(ops_npz["ensemble_patches"], (0, 2, 3, 1))
    ratios = ops_npz["ensemble_coords"]
    w, h = (int(v) for v in ops_npz["ensemble_size"])
    stage = _stage_for(ratios, (w, h))
    slot = jnp.arange(len(ratios), dtype=jnp.int32)  # all selected, in order
    out, mask = jax.jit(lambda p, s: stages.ensemble_selected(p, s, stage, "reference"))(jnp.asarray(patches), slot)
    np.testing.assert_allclose(np.asarray(out), np.transpose(ops_npz["ensemble_out"][0], (1, 2, 0)), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(mask), ops_npz["ensemble_mask"])


def test_ensemble_selection_order_and_average():
    # two overlapping patches of a 1-D-ish grid: 12x8 map, crops 8x8 at x=0 and x=4
    ratios = np.array([[0, 0, 8 / 12, 1], [4 / 12, 0, 1, 1]])
    stage = _stage_for(ratios, (12, 8))
    a = jnp.full((1, 8, 8, 2), jnp.array([1.0, 0.0]))
    b = jnp.full((1, 8, 8, 2), jnp.array([0.0, 1.0]))
    # reference: later selected wins the overlap (then divided by the shrunk-box count: 0 here)
    # position 0 is selected second (rank 1) and holds refined[1] = b, so it wins the overlap
    out, _ = stages.ensemble_selected(jnp.concatenate([a, b]), jnp.array([1, 0]), stage, "reference")
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(out[4, 10]), [1.0, 0.0])
    out, _ = stages.ensemble_selected(jnp.concatenate([a, b]), jnp.array([0, 1]), stage, "reference")
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.0, 1.0])  # position 1 (b) selected second
    out, mask = stages.ensemble_selected(jnp.concatenate([a, b]), jnp.array([0, 1]), stage, "average")
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.5, 0.5])
    np.testing.assert_allclose(np.asarray(out[4, 1]), [1.0, 0.0])
    assert bool(mask.all())
    # an unselected patch contributes nothing
    out, mask = stages.ensemble_selected(jnp.concatenate([a, b]), jnp.array([0, -1]), stage, "average")
    assert not bool(mask[:, 9:].any()) and float(out[4, 10].sum()) == 0.0


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
    for trial in range(9):
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


@pytest.mark.parametrize("mode", ["reference", "average"])
def test_gather_ensemble_equals_loop_on_overlapping_grid(mode):
    from magnet_jax.inference.plan import patch_grid_ratios

    ratios = patch_grid_ratios((300, 140), (128, 64))  # overlapping 3 x 3 grid
    stage = _stage_for(ratios, (300, 140))
    assert stages._regular_grid(stage) is not None
    k = 5
    refined = jax.random.uniform(jax.random.PRNGKey(3), (k, 32, 48, 3))
    slot = np.full(len(ratios), -1, np.int32)
    slot[[7, 0, 4, 2, 8]] = np.arange(k)
    got = stages.ensemble_selected(refined, jnp.asarray(slot), stage, mode)
    want = stages._ensemble_loop(refined, jnp.asarray(slot), stage, mode)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
