"""MagNet's refinement stage on a whole image as a pure, jit-compiled function of static shapes (NHWC).

`make_refine_stage_fn` turns a plan (`plan.py`) and the models' NNX graph definitions into a function of
arrays only (model states, probabilities, image patches), built from the region kernels (`kernels.py`)
with the whole stage map as the one region. Every shape inside is fixed by the plan: patch selection is
`k` indices out of `N`, backbone and refiner run over the `k` selected patches in sub-batches of one
compiled size (padded), points are chosen with a fixed budget and written with a mask instead of the
original's boolean indexing. Nothing inside a stage goes back to the host.

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
import numpy as np
from jax.sharding import Mesh

from magnet_jax.inference import kernels
from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.inference.select import sampled_mask, select_top_mask, smooth_error
from magnet_jax.ops.ensemble import ensemble_patches
from magnet_jax.ops.patches import certainty
from magnet_jax.ops.resize import resize_bilinear
from magnet_jax.ops.roi_align import required_samples

__all__ = ["make_refine_stage_fn"]


def make_refine_stage_fn(
    stage: StagePlan,
    plan: MagNetPlan,
    backbone_graphdef,
    refiner_graphdef,
    *,
    mesh: Mesh | None = None,
    split: bool | None = None,
) -> Callable:
    """The refinement stage `stage.index` on the whole image as a pure function of arrays, compiled once.

    `fn(backbone_state, refiner_state, probs_prev [h, w, C], patches [N, ih, iw, 3]) -> dict` with
    `probs` `[H, W, C]` (the stage's output P), `argmax` `[H, W]` uint8, `uncertainty` `[H, W]`
    (1 - certainty of the upsampled input), `error` `[H, W]` (the smoothed error score the points
    were chosen from), `selected` `[k]` int32 (patch indices in selection order), `points` (number of
    pixels written) and `refined` `[H, W]` bool (those pixels).

    The stage has four phases: `upsample` (step 1), `select` (steps 2-4), `refine` (step 5: the region
    kernel `kernels.make_refine_fn` over the selected patches, split over the devices of `mesh`) and
    `finish` (steps 6-9). With `split=False` they are one `jax.jit`; with `split=True` (the default on
    CPU) each phase is its own `jax.jit`, chained on the device without any transfer: the large maps are
    then materialised between phases, which on XLA:CPU avoids fusions that recompute the upsampled map
    per consumer (several times faster there).
    """
    if split is None:
        split = jax.default_backend() == "cpu"
    reference = plan.compat == "reference"
    h, w = stage.size_hw
    ih, iw = plan.input_hw
    k = stage.k
    batch = kernels.patch_batch(stage, plan)
    total = kernels.padded_count(k, batch, mesh)
    boxes_np = stage.boxes  # [N, 4] float32 pixels of this scale
    max_samples = required_samples(boxes_np, (ih, iw))
    origin = np.zeros(2, np.int32)  # the whole image is the one region of the stage
    mapped = kernels.make_refine_fn(
        backbone_graphdef, refiner_graphdef, mesh, batch=batch, boxes=boxes_np, input_hw=(ih, iw), full_hw=(h, w),
        dtype=plan.dtype, conv_algorithm=plan.conv_algorithm,
    )  # fmt: skip

    def upsample(probs_prev):
        # 1. upsample the previous probabilities
        return resize_bilinear(probs_prev[None].astype(jnp.float32), (h, w), align_corners=False)[0]

    def select(probs):
        # 2-3. uncertainty, patch scores (mean RoI Align of the uncertainty over each patch)
        unc = kernels.uncertainty(probs)
        scores = kernels.patch_scores(
            unc, boxes_np, origin, input_hw=(ih, iw), max_samples=max_samples, full_hw=(h, w)
        )
        # 4. patch selection (k static): reference keeps the least uncertain (ascending), paper the most
        order = jnp.argsort(scores if reference else -scores, stable=True).astype(jnp.int32)
        return unc, order[:k]

    def refine(backbone_state, refiner_state, probs, patches, selected):
        # 5. backbone + coarse crops + refiner on the selected patches, padded with the first one
        padded = jnp.concatenate([selected, jnp.broadcast_to(selected[:1], (total - k,))])
        images = jnp.take(patches, padded, axis=0)
        return mapped(backbone_state, refiner_state, probs, origin, images, padded)[:k]

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

    chained.phases = {"upsample": upsample_j, "select": select_j, "refine": refine_j, "finish": finish_j}
    return chained
