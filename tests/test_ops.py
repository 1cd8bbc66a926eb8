"""magnet_jax.ops against the original MagNet's outputs (parity/ops.npz) and behaviour checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.ops import (
    adaptive_avg_pool,
    certainty,
    ensemble_patches,
    median_filter,
    patch_boxes_int,
    patch_boxes_px,
    patch_grid,
    point_sample,
    point_sample_batched,
    required_samples,
    resize_bilinear,
    resize_nearest,
    roi_align,
    roi_align_batched,
)

INTERP_TOL = 1e-5  # parity README: ensemble and interpolation
ROI_TOL = 1e-4  # parity README: roi_align


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def keys(npz: dict, prefix: str) -> list[int]:
    found = sorted({int(k[len(prefix) :].split("_")[0]) for k in npz if k.startswith(prefix)})
    assert found, f"no {prefix}* entries in ops.npz"
    return found


# ----------------------------------------------------------------------------------------------- parity


def test_interp_bilinear_parity(ops_npz):
    for i in keys(ops_npz, "interp_bilinear_"):
        x = nhwc(ops_npz[f"interp_bilinear_{i}_in"])
        size = tuple(int(v) for v in ops_npz[f"interp_bilinear_{i}_size"])
        ac = bool(ops_npz[f"interp_bilinear_{i}_align_corners"])
        ref = nhwc(ops_npz[f"interp_bilinear_{i}_out"])
        out = jax.jit(lambda x, s=size, a=ac: resize_bilinear(x, s, a))(x)
        assert out.shape == ref.shape
        assert max_err(out, ref) <= INTERP_TOL, (i, size, ac, max_err(out, ref))


def test_interp_nearest_parity(ops_npz):
    for i in keys(ops_npz, "interp_nearest_"):
        x = nhwc(ops_npz[f"interp_nearest_{i}_in"])
        size = tuple(int(v) for v in ops_npz[f"interp_nearest_{i}_size"])
        ref = nhwc(ops_npz[f"interp_nearest_{i}_out"])
        out = np.asarray(jax.jit(lambda x, s=size: resize_nearest(x, s))(x))
        np.testing.assert_array_equal(out, ref)  # a pure gather: exact


def test_roi_align_parity(ops_npz):
    for i in keys(ops_npz, "roi_align_"):
        feat = nhwc(ops_npz[f"roi_align_{i}_feat"])[0]
        boxes = ops_npz[f"roi_align_{i}_boxes"]
        out_hw = tuple(int(v) for v in ops_npz[f"roi_align_{i}_out_hw"])
        ref = nhwc(ops_npz[f"roi_align_{i}_out"])
        ms = required_samples(boxes, out_hw)
        eager = roi_align(feat, boxes, out_hw)
        traced = jax.jit(lambda f, b, o=out_hw, m=ms: roi_align(f, b, o, max_samples=m))(feat, boxes)
        assert eager.shape == ref.shape
        assert max_err(eager, ref) <= ROI_TOL, (i, max_err(eager, ref))
        assert max_err(traced, ref) <= ROI_TOL, (i, max_err(traced, ref))


def test_roi_align_matmul_method_parity(ops_npz):
    for i in keys(ops_npz, "roi_align_"):
        if ops_npz[f"roi_align_{i}_feat"].shape[-1] > 600:
            continue  # the dense path is slow on CPU at large sizes; same weights as the gather path
        feat = nhwc(ops_npz[f"roi_align_{i}_feat"])[0]
        boxes = ops_npz[f"roi_align_{i}_boxes"]
        out_hw = tuple(int(v) for v in ops_npz[f"roi_align_{i}_out_hw"])
        out = roi_align(feat, boxes, out_hw, method="matmul", batch_size=None)
        assert max_err(out, nhwc(ops_npz[f"roi_align_{i}_out"])) <= ROI_TOL


def test_point_sample_parity(ops_npz):
    feat = nhwc(ops_npz["point_sample_feat"])[0]
    pts = ops_npz["point_sample_coords"][0]
    ref = ops_npz["point_sample_out"][0].T  # [C, P] -> [P, C]
    assert max_err(point_sample(feat, pts), ref) <= INTERP_TOL
    assert max_err(jax.jit(point_sample)(feat, pts), ref) <= INTERP_TOL
    batched = point_sample_batched(feat[None], pts[None])
    assert max_err(batched[0], ref) <= INTERP_TOL


@pytest.mark.parametrize("method", ["bisect", "sort"])
def test_median_parity(ops_npz, method):
    for k in keys(ops_npz, "median_"):
        x = ops_npz[f"median_{k}_in"][0, 0]
        ref = ops_npz[f"median_{k}_out"][0, 0]
        out = jax.jit(lambda x, k=k: median_filter(x, k, method=method, chunk_rows=50))(x)
        np.testing.assert_array_equal(np.asarray(out), ref)  # a selection: exact
        batched = median_filter(ops_npz[f"median_{k}_in"][:, 0], k, method=method)
        np.testing.assert_array_equal(np.asarray(batched)[0], ref)


def test_certainty_parity(ops_npz):
    probs = nhwc(ops_npz["certainty_in"])
    ref = ops_npz["certainty_out"][:, 0]
    assert max_err(jax.jit(certainty)(probs), ref) <= INTERP_TOL


def test_patch_grid_parity(ops_npz):
    for i in keys(ops_npz, "patch_coords_"):
        scale = tuple(int(v) for v in ops_npz[f"patch_coords_{i}_scale"])
        crop = tuple(int(v) for v in ops_npz[f"patch_coords_{i}_crop"])
        grid = patch_grid(scale, crop)
        assert grid.dtype == np.float64
        np.testing.assert_array_equal(grid, ops_npz[f"patch_coords_{i}_out"])


def test_ensemble_parity(ops_npz):
    patches = nhwc(ops_npz["ensemble_patches"])
    coords = ops_npz["ensemble_coords"]
    size = tuple(int(v) for v in ops_npz["ensemble_size"])
    ref = nhwc(ops_npz["ensemble_out"])[0]
    ref_mask = ops_npz["ensemble_mask"]
    out, mask = ensemble_patches(patches, coords, size, "reference")
    assert out.shape == ref.shape and mask.dtype == jnp.bool_
    assert max_err(out, ref) <= INTERP_TOL
    np.testing.assert_array_equal(np.asarray(mask), ref_mask)
    # the same through jit with a traced all-true selection
    fn = jax.jit(lambda p, v: ensemble_patches(p, coords, size, "reference", valid=v))
    out2, mask2 = fn(patches, jnp.ones(len(coords), bool))
    assert max_err(out2, ref) <= INTERP_TOL
    np.testing.assert_array_equal(np.asarray(mask2), ref_mask)


# ---------------------------------------------------------------------------------------------- behaviour


def test_resize_bilinear_behaviour():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 13, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(resize_bilinear(x, (9, 13), False)), x)
    const = np.full((1, 7, 5, 2), 3.25, np.float32)
    for size in [(14, 10), (3, 2), (7, 11), (1, 1)]:
        for ac in (False, True):
            np.testing.assert_allclose(np.asarray(resize_bilinear(const, size, ac)), 3.25, atol=1e-6)
    # align_corners=True keeps the corners
    y = np.asarray(resize_bilinear(x, (17, 25), True))
    np.testing.assert_allclose(y[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6)
    # x2 upsampling with align_corners=False: interior pixel 2i+1 is 3/4 x[i] + 1/4 x[i+1] (per axis)
    row = np.arange(6, dtype=np.float32).reshape(1, 1, 6, 1)
    up = np.asarray(resize_bilinear(row, (1, 12), False))[0, 0, :, 0]
    np.testing.assert_allclose(up, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.25, 4.75, 5], atol=1e-6)


def test_resize_bilinear_long_axes_match_dense_matrices():
    # axes longer than 64 px are interpolated with gathers; they must equal the dense matrix product
    from magnet_jax.ops.resize import _apply_separable, bilinear_matrix

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 70, 90, 3)).astype(np.float32)
    for size in [(140, 180), (33, 250), (70, 45), (1, 1)]:
        for ac in (False, True):
            dense = _apply_separable(x, bilinear_matrix(70, size[0], ac), bilinear_matrix(90, size[1], ac))
            assert max_err(jax.jit(lambda x, s=size, a=ac: resize_bilinear(x, s, a))(x), dense) <= 1e-6


def test_resize_nearest_behaviour():
    x = np.arange(4 * 6).reshape(1, 4, 6, 1).astype(np.int32)
    y = resize_nearest(x, (8, 12))
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(y)[0, :, :, 0], np.repeat(np.repeat(x[0, :, :, 0], 2, 0), 2, 1))
    np.testing.assert_array_equal(np.asarray(resize_nearest(x, (2, 3)))[0, :, :, 0], x[0, ::2, ::2, 0])


def test_adaptive_avg_pool_behaviour():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 10, 7, 3)).astype(np.float32)
    for oh, ow in [(1, 1), (2, 2), (3, 3), (6, 6), (4, 5)]:
        ref = np.zeros((2, oh, ow, 3))
        for i in range(oh):
            for j in range(ow):
                r0, r1 = (i * 10) // oh, -((-(i + 1) * 10) // oh)
                c0, c1 = (j * 7) // ow, -((-(j + 1) * 7) // ow)
                ref[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
        assert max_err(adaptive_avg_pool(x, (oh, ow)), ref) <= 1e-6


def _roi_align_reference(feat: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Direct float32 loops of torchvision's CPU roi_align (aligned=False, sampling_ratio=-1), small sizes only."""
    f32 = np.float32
    h, w, c = feat.shape
    oh, ow = out_hw
    out = np.zeros((len(boxes), oh, ow, c), np.float64)

    def lerp_weights(v: np.float32, size: int):
        if v < -1.0 or v > size:
            return None
        v = max(v, f32(0.0))
        lo = int(v)
        if lo >= size - 1:
            return [(size - 1, 1.0)]
        frac = f32(v - f32(lo))
        return [(lo, float(f32(1.0) - frac)), (lo + 1, float(frac))]

    for k, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, f32)):
        rh = max(f32(y1 - y0), f32(1.0))
        rw = max(f32(x1 - x0), f32(1.0))
        bh, bw = f32(rh / f32(oh)), f32(rw / f32(ow))
        gh, gw = int(np.ceil(rh / f32(oh))), int(np.ceil(rw / f32(ow)))
        for ph in range(oh):
            for pw in range(ow):
                acc = np.zeros(c)
                for iy in range(gh):
                    y = f32(f32(y0 + f32(f32(ph) * bh)) + f32(f32(f32(iy + 0.5) * bh) / f32(gh)))
                    for ix in range(gw):
                        x = f32(f32(x0 + f32(f32(pw) * bw)) + f32(f32(f32(ix + 0.5) * bw) / f32(gw)))
                        wy, wx = lerp_weights(y, h), lerp_weights(x, w)
                        if wy is None or wx is None:
                            continue
                        for yy, ay in wy:
                            for xx, ax in wx:
                                acc += ay * ax * feat[yy, xx]
                out[k, ph, pw] = acc / (gh * gw)
    return out


def test_roi_align_matches_reference_loops_on_edge_cases():
    rng = np.random.default_rng(2)
    feat = rng.standard_normal((11, 14, 2)).astype(np.float32)
    boxes = np.array(
        [
            [0.0, 0.0, 14.0, 11.0],  # whole map
            [-3.0, -2.5, 5.0, 4.0],  # starts outside (samples below -1 are zero)
            [9.5, 7.25, 16.0, 13.0],  # runs past the bottom-right edge
            [3.3, 4.1, 3.4, 4.2],  # degenerate: size clamped to 1
            [1.0, 2.0, 13.9, 3.0],  # wide and flat: several samples along x
            [-5.0, -5.0, -2.0, -2.0],  # entirely outside
        ],
        np.float32,
    )
    for out_hw in [(3, 4), (5, 2), (1, 1)]:
        ref = _roi_align_reference(feat, boxes, out_hw)
        assert max_err(roi_align(feat, boxes, out_hw), ref) <= 1e-5
        ms = required_samples(boxes, out_hw)
        traced = jax.jit(lambda f, b, o=out_hw, m=ms: roi_align(f, b, o, max_samples=m))(feat, boxes)
        assert max_err(traced, ref) <= 1e-5
        bigger = roi_align(feat, boxes, out_hw, max_samples=(ms[0] + 2, ms[1] + 1), method="matmul")
        assert max_err(bigger, ref) <= 1e-5


def test_roi_align_behaviour():
    rng = np.random.default_rng(3)
    feat = rng.standard_normal((12, 16, 3)).astype(np.float32)
    # aligned=False samples the centre of each bin: a box shifted by -0.5 px with one bin per pixel is the identity
    ident = roi_align(feat, np.array([[-0.5, -0.5, 15.5, 11.5]], np.float32), (12, 16))
    assert max_err(ident[0], feat) <= 1e-6
    const = np.full((20, 30, 2), 0.75, np.float32)
    out = roi_align(const, np.array([[2.0, 3.0, 27.0, 17.5], [0.0, 0.0, 30.0, 20.0]], np.float32), (7, 9))
    np.testing.assert_allclose(np.asarray(out), 0.75, atol=1e-6)
    # traced boxes need a static sampling bound
    with pytest.raises(ValueError, match="max_samples"):
        jax.jit(lambda b: roi_align(feat, b, (4, 4)))(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="max_samples"):
        roi_align(feat, np.array([[0.0, 0.0, 16.0, 12.0]], np.float32), (2, 2), max_samples=(2, 2))
    assert required_samples(np.array([[0.0, 0.0, 16.0, 12.0]], np.float32), (2, 2)) == (6, 8)
    # batched: one box per image
    feats = rng.standard_normal((3, 12, 16, 2)).astype(np.float32)
    boxes = np.array([[0.0, 0.0, 8.0, 6.0], [3.5, 2.0, 15.0, 11.0], [1.0, 1.0, 4.0, 9.0]], np.float32)
    batched = jax.jit(lambda f, b: roi_align_batched(f, b, (5, 6), (2, 2)))(feats, boxes)
    for b in range(3):
        assert max_err(batched[b], roi_align(feats[b], boxes[b : b + 1], (5, 6))[0]) <= 1e-6
    # batch_size does not change results
    many = np.concatenate([boxes, boxes + 1.0], 0)
    a = roi_align(feats[0], many, (5, 6), batch_size=1)
    b = roi_align(feats[0], many, (5, 6), batch_size=4)
    c = roi_align(feats[0], many, (5, 6), batch_size=None)
    assert max_err(a, b) <= 1e-5 and max_err(a, c) <= 1e-5  # float32 reassociation only


def test_point_sample_behaviour():
    rng = np.random.default_rng(4)
    feat = rng.standard_normal((6, 9, 2)).astype(np.float32)
    ys, xs = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
    centres = np.stack([(xs.ravel() + 0.5) / 9, (ys.ravel() + 0.5) / 6], axis=1).astype(np.float32)
    assert max_err(point_sample(feat, centres), feat.reshape(-1, 2)) <= 1e-6
    # the top-left image corner lies half a pixel outside every pixel centre: 1/4 of the corner pixel
    corner = np.asarray(point_sample(feat, np.zeros((1, 2), np.float32)))[0]
    np.testing.assert_allclose(corner, feat[0, 0] / 4, atol=1e-6)
    far = np.asarray(point_sample(feat, np.array([[2.0, 2.0], [-1.0, 0.5]], np.float32)))
    np.testing.assert_array_equal(far, 0.0)
    mask = point_sample(np.ones((6, 9, 1), bool), centres[:3])
    np.testing.assert_array_equal(np.asarray(mask), 1.0)


def _median_reference(x: np.ndarray, k: int) -> np.ndarray:
    h, w = x.shape
    p = np.pad(x, (((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2)))
    win = np.lib.stride_tricks.sliding_window_view(p, (k, k)).reshape(h, w, k * k)
    return np.sort(win, axis=-1)[..., (k * k - 1) // 2]


@pytest.mark.parametrize("method", ["bisect", "sort"])
def test_median_behaviour(method):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 19, 23)).astype(np.float32)
    x[0, 3:7, 4:9] = 0.0  # ties with the padding value
    for k in (1, 2, 3, 4, 7, 16):
        out = np.asarray(median_filter(x, k, method=method, chunk_rows=6))
        for b in range(2):
            np.testing.assert_array_equal(out[b], _median_reference(x[b], k))
    const = np.full((25, 30), 0.4, np.float32)
    out = np.asarray(median_filter(const, 9, method=method))
    np.testing.assert_array_equal(out[4:-4, 4:-4], np.float32(0.4))
    # the corner window holds 25 of 81 non-zero values: its median is a padding zero
    assert out[0, 0] == 0.0


def test_certainty_behaviour():
    probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(certainty(probs)), [0.3, 0.0, 1.0], atol=1e-7)


def test_patch_grid_behaviour():
    grid = patch_grid((2448, 2448), (612, 612))
    assert grid.shape == (16, 4)
    # x-major order: the second patch is below the first
    np.testing.assert_allclose(grid[1], [0.0, 0.25, 0.25, 0.5])
    # the step is truncated to an int, so the last row of patches may stop short of the border (698 < 700)
    uneven = patch_grid((1000, 700), (256, 128))
    assert uneven.shape == (24, 4)
    np.testing.assert_array_equal(uneven[-1], [744 / 1000, 570 / 700, 1.0, 698 / 700])
    boxes = patch_boxes_px(grid, (2448, 2448))
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes[5], [612.0, 612.0, 1224.0, 1224.0])
    traced = jax.jit(lambda r: patch_boxes_px(r, (2448, 2448)))(grid.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(traced), boxes)
    np.testing.assert_array_equal(patch_boxes_int(grid, (2448, 2448))[5], [612, 612, 1224, 1224])


def test_ensemble_average_of_overlapping_constant_patches():
    ratios = patch_grid((100, 70), (80, 60))  # 2 x 2 patches overlapping by 60 px in x and 50 px in y
    boxes = patch_boxes_int(ratios, (100, 70))
    np.testing.assert_array_equal(boxes, [[0, 0, 80, 60], [0, 10, 80, 70], [20, 0, 100, 60], [20, 10, 100, 70]])
    patches = np.full((len(ratios), 16, 20, 2), 0.3, np.float32)
    out, mask = ensemble_patches(patches, ratios, (100, 70), "average")
    assert out.shape == (70, 100, 2)
    np.testing.assert_allclose(np.asarray(out), 0.3, atol=1e-6)
    assert bool(np.asarray(mask).all())
    # the reference mode divides overwritten values by the count on boxes shrunk by 10 px (the original's defect)
    ref_out, ref_mask = ensemble_patches(patches, ratios, (100, 70), "reference")
    ref_out = np.asarray(ref_out)
    np.testing.assert_allclose(ref_out[35, 50], 0.3 / 4, atol=1e-6)  # inside all four shrunk boxes
    np.testing.assert_allclose(ref_out[15, 15], 0.3, atol=1e-6)  # inside one shrunk box
    np.testing.assert_allclose(ref_out[5, 5], 0.3, atol=1e-6)  # margin: count 0, divided by 1
    assert not bool(np.asarray(ref_mask)[5, 5]) and bool(np.asarray(ref_mask)[15, 15])


def test_ensemble_selection_modes():
    rng = np.random.default_rng(6)
    ratios = patch_grid((120, 90), (60, 45))  # 2 x 2, no overlap
    patches = rng.random((4, 30, 40, 3)).astype(np.float32)
    sel = np.array([2, 0])
    for mode in ("reference", "average"):
        ref_out, ref_mask = ensemble_patches(patches[sel], ratios[sel], (120, 90), mode)
        valid = np.zeros(4, bool)
        valid[sel] = True
        for out, mask in (
            ensemble_patches(patches, ratios, (120, 90), mode, valid=valid),
            jax.jit(lambda p, v, m=mode: ensemble_patches(p, ratios, (120, 90), m, valid=v))(patches, valid),
            ensemble_patches(patches[sel], ratios, (120, 90), mode, indices=sel),
            jax.jit(lambda p, i, m=mode: ensemble_patches(p, ratios, (120, 90), m, indices=i))(patches[sel], sel),
        ):
            assert max_err(out, ref_out) <= 1e-6
            np.testing.assert_array_equal(np.asarray(mask), np.asarray(ref_mask))
        # unselected patches contribute nothing
        assert float(np.abs(np.asarray(ref_out)[45:, :60]).max()) == 0.0
    with pytest.raises(ValueError):
        ensemble_patches(patches, ratios, (120, 90), valid=np.ones(4, bool), indices=sel)


def test_ensemble_traced_indices_keep_selection_order():
    # two overlapping patches: 12x8 map, crops 8x8 at x=0 and x=4
    ratios = np.array([[0, 0, 8 / 12, 1], [4 / 12, 0, 1, 1]])
    a = jnp.full((1, 8, 8, 2), jnp.array([1.0, 0.0]))
    b = jnp.full((1, 8, 8, 2), jnp.array([0.0, 1.0]))
    ab = jnp.concatenate([a, b])
    fn = jax.jit(lambda p, i, m: ensemble_patches(p, ratios, (12, 8), m, indices=i), static_argnums=2)
    # reference: the later selected patch wins the overlap (then divided by the shrunk-box count: 0 here)
    out, _ = fn(ab, jnp.array([1, 0]), "reference")  # box 0 selected second: it holds b and wins
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(out[4, 10]), [1.0, 0.0])
    out, _ = fn(ab, jnp.array([0, 1]), "reference")
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.0, 1.0])
    out, mask = fn(ab, jnp.array([0, 1]), "average")
    np.testing.assert_allclose(np.asarray(out[4, 5]), [0.5, 0.5])
    np.testing.assert_allclose(np.asarray(out[4, 1]), [1.0, 0.0])
    assert bool(mask.all())
    out, mask = ensemble_patches(ab, ratios, (12, 8), "average", valid=jnp.array([True, False]))
    assert not bool(mask[:, 9:].any()) and float(out[4, 10].sum()) == 0.0


@pytest.mark.parametrize("mode", ["reference", "average"])
def test_ensemble_grid_gather_equals_box_loop(mode):
    size = (300, 140)
    ratios = patch_grid(size, (128, 64))  # overlapping 3 x 3 grid
    patches = jax.random.uniform(jax.random.PRNGKey(3), (5, 32, 48, 3))
    selected = jnp.array([7, 0, 4, 2, 8])  # traced below: all 9 grid boxes stay, 5 of them ranked

    def run(method):
        fn = jax.jit(lambda p, i: ensemble_patches(p, ratios, size, mode, indices=i, method=method))
        return fn(patches, selected)

    got, want = run("grid"), run("boxes")
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    assert 0.2 < float(np.asarray(got[1]).mean()) < 1.0  # part of the map is covered, not all of it
    with pytest.raises(ValueError, match="method='grid' needs equal boxes"):
        ensemble_patches(patches[:2], ratios[[0, 4]], size, mode, method="grid")
