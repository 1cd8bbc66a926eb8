"""MagNet's stages as pure, jit-compiled functions of static shapes (NHWC, one image).

`make_stage0_fn` and `make_refine_stage_fn` turn a plan (`plan.py`) and the models' NNX graph
definitions into functions of arrays only (model states, probabilities, image patches). Every
shape inside is fixed by the plan: patch selection is `k` indices out of `N`, backbone and refiner
run over the `k` selected patches in sub-batches of one compiled size (padded), points are chosen
with a fixed budget and written with a mask instead of the original's boolean indexing. Nothing
inside a stage goes back to the host.

One refinement stage at scale S (MAGNET_SPEC.md section 2, steps 1-9):
  P = bilinear(P_prev -> S); U = 1 - certainty(P); patch scores = mean RoI Align of U per patch;
  select k patches; F = softmax(backbone(patches)); C = RoI Align(P, boxes);
  R = softmax(refiner(F, C)); E, mask = ensemble(R); error = certainty(E) * U, median-smoothed at
  input resolution; write E into P at the top-`budget` error pixels.

`compat="reference"` reproduces the original with its defects; `compat="paper"` fixes them
(see `plan.py` and MAGNET_SPEC.md section 5):
  - selection: reference keeps the k *least* uncertain patches (ascending sort); paper the k most;
  - error score: reference zeroes it inside the refined patches when `n_patches > 0`; paper keeps
    it and restricts the points to the refined patches instead;
  - ensemble: reference overwrites overlapping patches (later selected wins), counts overlaps on
    boxes shrunk by 10 px and divides by the count; paper averages patches over their full boxes;
  - point selection: reference replays PyTorch's CPU `topk` tie-breaking where it matters
    (`topk.py`); paper breaks ties by the lower pixel index.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.inference.topk import torch_topk_indices
from magnet_jax.ops.median import median_filter
from magnet_jax.ops.patches import certainty, ensemble_patches
from magnet_jax.ops.resize import resize_bilinear, resize_nearest
from magnet_jax.ops.roi_align import required_samples, roi_align

__all__ = [
    "make_refine_stage_fn",
    "make_stage0_fn",
    "select_top_mask",
    "smooth_error",
]

# When the budget boundary splits a group of equal error scores, the reference mode replays
# PyTorch's tie-breaking if the group's undecided part exceeds this fraction of the pixels.
_TIE_REPLAY_FRACTION = 1.0 / 4096


# ----------------------------------------------------------------------------- error score and points


def smooth_error(error: jax.Array, input_hw: tuple[int, int], kernel: int) -> jax.Array:
    """`[H, W]` -> nearest to `input_hw`, k x k median (zero padding), nearest back to `[H, W]`."""
    h, w = error.shape
    small = resize_nearest(error[None, :, :, None], input_hw)[0, :, :, 0]
    small = median_filter(small, kernel)
    return resize_nearest(small[None, :, :, None], (h, w))[0, :, :, 0]


def _sortable_key(v: jax.Array) -> jax.Array:
    """float32 -> uint32 with the same order (negatives included)."""
    b = jax.lax.bitcast_convert_type(v.astype(jnp.float32), jnp.uint32)
    return jnp.where((b >> 31) == 1, ~b, b | jnp.uint32(0x80000000))


def _kth_largest_key(key: jax.Array, k: int) -> jax.Array:
    """The k-th largest of `key` (uint32 `[n]`, 1 <= k <= n) by a two-pass 16-bit radix select."""
    hi = (key >> 16).astype(jnp.int32)
    count_hi = jnp.zeros((65536,), jnp.int32).at[hi].add(1)
    at_least = jnp.cumsum(count_hi[::-1])[::-1]  # elements with hi >= b
    b_hi = jnp.sum(at_least >= k).astype(jnp.int32) - 1
    above = jnp.where(b_hi < 65535, at_least[jnp.minimum(b_hi + 1, 65535)], 0)
    lo = (key & jnp.uint32(0xFFFF)).astype(jnp.int32)
    count_lo = jnp.zeros((65536,), jnp.int32).at[jnp.where(hi == b_hi, lo, 65536)].add(1, mode="drop")
    at_least_lo = jnp.cumsum(count_lo[::-1])[::-1]
    b_lo = jnp.sum(at_least_lo >= k - above).astype(jnp.int32) - 1
    return (b_hi.astype(jnp.uint32) << 16) | b_lo.astype(jnp.uint32)


def select_top_mask(score: jax.Array, k: int, *, torch_ties: bool) -> jax.Array:
    """Boolean `[n]` mask of the `k` largest entries of the flat `score`.

    Entries above the k-th largest value are always in; of the entries equal to it, the lowest
    indices are taken, or with `torch_ties` the ones PyTorch's CPU `topk` takes (replayed only when
    that tie group is large enough to matter, see `_TIE_REPLAY_FRACTION`). `k >= n` selects all.
    """
    n = score.shape[0]
    if k >= n:
        return jnp.ones((n,), bool)
    if k <= 0:
        return jnp.zeros((n,), bool)
    key = _sortable_key(score)
    t = _kth_largest_key(key, k)
    above = key > t
    ties = key == t
    need = k - jnp.sum(above)
    rank = jnp.cumsum(ties.astype(jnp.int32)) - 1
    simple = above | (ties & (rank < need))
    if not torch_ties:
        return simple
    n_ties = jnp.sum(ties)
    undecided = jnp.minimum(need, n_ties - need)
    threshold = max(1, int(n * _TIE_REPLAY_FRACTION))

    def replay():
        idx = torch_topk_indices(score, k)
        return jnp.zeros((n,), bool).at[idx].set(True)

    return jax.lax.cond(undecided > threshold, replay, lambda: simple)


@functools.lru_cache(maxsize=64)
def _pixel_centre_axis(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-axis bilinear corners of the original's pixel-centre points, through grid_sample (static, NumPy).

    The original samples at `p = step/2 + i*step` (float32, `step = 1/size`) with
    `grid_sample(2p - 1, align_corners=False)`; PyTorch's CPU kernel unnormalises with one fused
    multiply-add, `fma(g + 1, size / 2, -0.5)` in float32, and rounding can leave a tiny weight on the
    neighbour. Reproduced here in NumPy (the FMA as a float64 product rounded once; checked against
    PyTorch), returns `(i0, i0_weight_positive, i1, i1_weight_positive)`; out-of-range corners are
    marked non-positive.
    """
    f32 = np.float32
    step = 1.0 / float(size)
    p = (np.arange(size, dtype=f32) * f32(step)).astype(f32) + f32(step / 2.0)
    g = (f32(2.0) * p).astype(f32) - f32(1.0)
    gp1 = (g + f32(1.0)).astype(f32)
    pix = (gp1.astype(np.float64) * np.float64(f32(size / 2)) - 0.5).astype(f32)
    f0 = np.floor(pix).astype(f32)
    w1 = (pix - f0).astype(f32)
    w0 = ((f0 + f32(1.0)).astype(f32) - pix).astype(f32)
    i0 = f0.astype(np.int64)
    i1 = i0 + 1
    ok0 = (w0 > 0) & (i0 >= 0) & (i0 < size)
    ok1 = (w1 > 0) & (i1 >= 0) & (i1 < size)
    return np.clip(i0, 0, size - 1), ok0, np.clip(i1, 0, size - 1), ok1


def sampled_mask(mask: jax.Array) -> jax.Array:
    """`bool(point_sample(mask, pixel centre))` for every pixel (`[H, W]` bool), as the original casts it."""
    h, w = mask.shape
    ya, oka, yb, okb = _pixel_centre_axis(h)
    xa, okxa, xb, okxb = _pixel_centre_axis(w)
    out = jnp.zeros((h, w), bool)
    for yi, oky in ((ya, oka), (yb, okb)):
        rows = jnp.take(mask, jnp.asarray(yi), axis=0) & jnp.asarray(oky)[:, None]
        for xi, okx in ((xa, okxa), (xb, okxb)):
            out = out | (jnp.take(rows, jnp.asarray(xi), axis=1) & jnp.asarray(okx)[None, :])
    return out


# ----------------------------------------------------------------------------- stage functions


def _apply_model(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def make_stage0_fn(backbone_graphdef) -> Callable:
    """`stage0(backbone_state, patch [1, ih, iw, 3]) -> (probs [ih, iw, C], argmax [ih, iw] uint8)` (jitted)."""

    @jax.jit
    def stage0(backbone_state, patch):
        probs = jax.nn.softmax(_apply_model(backbone_graphdef, backbone_state, patch).astype(jnp.float32), axis=-1)[0]
        return probs, jnp.argmax(probs, axis=-1).astype(jnp.uint8)

    return stage0


def effective_batch(stage: StagePlan, patch_batch_size: int) -> int:
    """Sub-batch size of a stage: the configured size (0: 1 on CPU, where larger batches only cost memory
    and time, 8 on accelerators), but never more than the patches refined."""
    size = int(patch_batch_size)
    if size <= 0:
        size = 1 if jax.default_backend() == "cpu" else 8
    return max(1, min(size, stage.k))


def make_refine_stage_fn(
    stage: StagePlan, plan: MagNetPlan, backbone_graphdef, refiner_graphdef, *, split: bool | None = None
) -> Callable:
    """The refinement stage `stage.index` as a pure function of arrays, compiled once.

    `fn(backbone_state, refiner_state, probs_prev [h, w, C], patches [N, ih, iw, 3]) -> dict` with
    `probs` `[H, W, C]` (the stage's output P), `argmax` `[H, W]` uint8, `uncertainty` `[H, W]`
    (1 - certainty of the upsampled input), `error` `[H, W]` (the smoothed error score the points
    were chosen from), `selected` `[k]` int32 (patch indices in selection order), `points` (number of
    pixels written).

    The stage has four phases: `upsample` (step 1), `select` (steps 2-4), `refine` (step 5: backbone,
    coarse crops and refiner over the selected patches in `lax.map` sub-batches) and `finish` (steps
    6-9). With `split=False` they are one `jax.jit`; with `split=True` (the default on CPU) each phase is its
    own `jax.jit`, chained on the device without any transfer: the large maps are then materialised
    between phases, which on XLA:CPU avoids fusions that recompute the upsampled map per consumer
    (several times faster there).
    """
    if split is None:
        split = jax.default_backend() == "cpu"
    reference = plan.compat == "reference"
    h, w = stage.size_hw
    ih, iw = plan.input_hw
    k = stage.k
    batch = effective_batch(stage, plan.patch_batch_size)
    n_batches = -(-k // batch)
    boxes_np = stage.boxes  # [N, 4] float32 pixels of this scale
    max_samples = required_samples(boxes_np, (ih, iw))

    def upsample(probs_prev):
        # 1. upsample the previous probabilities
        return resize_bilinear(probs_prev[None].astype(jnp.float32), (h, w), align_corners=False)[0]

    def select(probs):
        # 2. uncertainty
        unc = 1.0 - certainty(probs)
        # 3. patch scores: mean RoI Align of the uncertainty over each patch
        scores = roi_align(unc[..., None], boxes_np, (ih, iw), max_samples=max_samples).mean(axis=(1, 2, 3))
        # 4. patch selection (k static): reference keeps the least uncertain (ascending), paper the most
        order = jnp.argsort(scores if reference else -scores, stable=True).astype(jnp.int32)
        return unc, order[:k]

    def refine(backbone_state, refiner_state, probs, patches, selected):
        # 5. backbone + coarse crops + refiner on the selected patches, sub-batches of one shape
        padded = jnp.concatenate([selected, jnp.broadcast_to(selected[:1], (n_batches * batch - k,))])
        boxes = jnp.asarray(boxes_np)

        def refine_batch(ids):
            images = jnp.take(patches, ids, axis=0)
            fine = jax.nn.softmax(_apply_model(backbone_graphdef, backbone_state, images).astype(jnp.float32), -1)
            coarse = roi_align(probs, jnp.take(boxes, ids, axis=0), (ih, iw), max_samples=max_samples)
            logits = _apply_model(refiner_graphdef, refiner_state, fine, coarse)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        refined = jax.lax.map(refine_batch, padded.reshape(n_batches, batch))
        return refined.reshape((n_batches * batch,) + refined.shape[2:])[:k]

    def finish(probs, unc, selected, refined):
        # 6. ensemble (overlaps overwritten in selection order in reference mode)
        mode = "reference" if reference else "average"
        ens, mask = ensemble_patches(refined, stage.ratios, stage.scale_wh, mode, indices=selected)
        # 7. error score, median smoothing at input resolution
        cert = certainty(ens)
        if stage.zero_error_in_mask:
            cert = jnp.where(mask, 0.0, cert)
        error = smooth_error(cert * unc, (ih, iw), stage.smooth_kernel)
        score = error if reference else jnp.where(mask, error, -1.0)
        # 8-9. top-budget points, write the refined values into P (a masked write: shapes stay static)
        chosen = select_top_mask(score.reshape(-1), stage.budget, torch_ties=reference)
        if stage.filter_points_by_mask:
            keep = sampled_mask(mask) if reference else mask
            chosen = chosen & keep.reshape(-1)
        chosen = chosen.reshape(h, w)
        out = jnp.where(chosen[..., None], ens, probs)
        return {
            "probs": out,
            "argmax": jnp.argmax(out, axis=-1).astype(jnp.uint8),
            "uncertainty": unc,
            "error": error,
            "selected": selected,
            "points": jnp.sum(chosen).astype(jnp.int32),
        }

    def fn(backbone_state, refiner_state, probs_prev, patches):
        probs = upsample(probs_prev)
        unc, selected = select(probs)
        refined = refine(backbone_state, refiner_state, probs, patches, selected)
        return finish(probs, unc, selected, refined)

    if not split:
        return jax.jit(fn)
    upsample_j, select_j, refine_j, finish_j = jax.jit(upsample), jax.jit(select), jax.jit(refine), jax.jit(finish)

    def chained(backbone_state, refiner_state, probs_prev, patches):
        probs = upsample_j(probs_prev)
        unc, selected = select_j(probs)
        refined = refine_j(backbone_state, refiner_state, probs, patches, selected)
        return finish_j(probs, unc, selected, refined)

    chained.phases = {
        "upsample": upsample_j,
        "select": select_j,
        "refine": refine_j,
        "finish": finish_j,
    }  # for profiling
    return chained


def make_final_fn(out_hw: tuple[int, int]) -> Callable:
    """`fn(probs [h, w, C]) -> argmax [H, W] uint8` after bilinear(ac=False) resizing to `out_hw` (jitted)."""

    @jax.jit
    def final(probs):
        up = resize_bilinear(probs[None].astype(jnp.float32), out_hw, align_corners=False)[0]
        return jnp.argmax(up, axis=-1).astype(jnp.uint8)

    return final
