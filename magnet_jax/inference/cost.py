"""Compute per image of a MagNet predictor from XLA's cost analysis of its stages.

Each stage's functions are compiled for the plan's static shapes (the same functions the predictor
runs; JAX's compilation cache makes this cheap after a first run) and XLA's cost analysis of the
optimised HLO counts their floating-point operations: backbone and refiner passes, RoI Align,
ensembling, the median filter and the point write.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.inference.kernels import make_stage0_fn, patch_batch
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.stages import make_refine_stage_fn


def _flops(lowered) -> float:
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per device
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0))


def stage_gflops(predictor: MagNetPredictor) -> list[float]:
    """GFLOP of each stage for one image (stage 0 first), from the compiled stage functions.

    Each refinement stage is compiled as its four phases (as the CPU predictor runs it). Cost analysis
    counts a loop body once, so the `refine` phase (one `lax.map` step: backbone, RoI Align and
    refiner on one sub-batch) is counted once per sub-batch. Compiled, not lowered HLO: before
    optimisation a cumulative sum over a stage's pixels is a window reduction counted as n^2 adds.
    """
    plan = predictor.plan
    ih, iw = plan.input_hw
    c = plan.num_classes
    bb_state = predictor.backbone_state
    spec = jax.ShapeDtypeStruct
    stage0 = make_stage0_fn(predictor.backbone_graph, dtype=plan.dtype, conv_algorithm=plan.conv_algorithm)
    out = [_flops(stage0.lower(bb_state, spec((1, ih, iw, 3), jnp.float32)).compile())]
    prev_hw = plan.input_hw
    for i, st in enumerate(plan.stages):
        ref_graph, ref_state = nnx.split(predictor.refiner_of(st.index))[0], predictor.refiner_state(i)
        mesh = predictor.mesh
        phases = make_refine_stage_fn(st, plan, predictor.backbone_graph, ref_graph, mesh=mesh, split=True).phases
        up = spec((st.size_hw[0], st.size_hw[1], c), jnp.float32)
        selected = spec((st.k,), jnp.int32)
        patches = spec((st.n_total, ih, iw, 3), jnp.float32)
        n_batches = -(-st.k // patch_batch(st, plan))
        total = _flops(phases["upsample"].lower(spec((prev_hw[0], prev_hw[1], c), jnp.float32)).compile())
        total += _flops(phases["select"].lower(up).compile())
        total += n_batches * _flops(phases["refine"].lower(bb_state, ref_state, up, patches, selected).compile())
        refined = spec((st.k, ih, iw, c), jnp.float32)
        total += _flops(phases["finish"].lower(up, spec(st.size_hw, jnp.float32), selected, refined).compile())
        out.append(total)
        prev_hw = st.size_hw
    return [f / 1e9 for f in out]


def gflops_per_image(predictor: MagNetPredictor) -> float:
    """Total GFLOP of one image through every stage (see `stage_gflops`)."""
    return float(sum(stage_gflops(predictor)))
