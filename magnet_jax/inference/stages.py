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

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.inference.select import sampled_mask, select_top_mask, smooth_error
from magnet_jax.models import refinement
from magnet_jax.models.layers import conv_compute_dtype
from magnet_jax.ops.conv import forward_algorithm
from magnet_jax.ops.ensemble import ensemble_patches
from magnet_jax.ops.patches import certainty
from magnet_jax.ops.resize import resize_bilinear
from magnet_jax.ops.roi_align import required_samples, roi_align

# The pixel-selection helpers live in `select.py`; they stay importable from here.
__all__ = [
    "effective_batch",
    "make_final_fn",
    "make_refine_stage_fn",
    "make_stage0_fn",
    "select_top_mask",
    "smooth_error",
]

# ----------------------------------------------------------------------------- stage functions


def _apply_model(graphdef, state, *args):
    return nnx.merge(graphdef, state)(*args)


def make_stage0_fn(backbone_graphdef, *, dtype: str = "float32", conv_algorithm: str = "auto") -> Callable:
    """`stage0(backbone_state, patch [1, ih, iw, 3]) -> (probs [ih, iw, C], argmax [ih, iw] uint8)` (jitted).

    `dtype`: the convolutions' operand dtype (`plan.dtype`, see `models.layers.conv_compute_dtype`);
    `conv_algorithm`: their forward algorithm (`plan.conv_algorithm`, see `ops.conv.forward_algorithm`).
    """

    @jax.jit
    def stage0(backbone_state, patch):
        with conv_compute_dtype(dtype), forward_algorithm(conv_algorithm):
            logits = _apply_model(backbone_graphdef, backbone_state, patch)
        probs = refinement.class_probabilities(logits)[0]
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
    pixels written) and `refined` `[H, W]` bool (those pixels).

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
    dtype = plan.dtype  # the convolutions' operand dtype; everything else stays float32

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
            backbone = nnx.merge(backbone_graphdef, backbone_state)
            images, crop_boxes = jnp.take(patches, ids, axis=0), jnp.take(boxes, ids, axis=0)
            refiner = nnx.merge(refiner_graphdef, refiner_state)
            with conv_compute_dtype(dtype), forward_algorithm(plan.conv_algorithm):
                fine, coarse = refinement.refiner_inputs(backbone, images, probs, crop_boxes, max_samples=max_samples)
                return refinement.class_probabilities(refinement.refine(refiner, fine, coarse))

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
            "refined": chosen,
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
