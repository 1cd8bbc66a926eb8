"""The MagNet predictor: a backbone, refiners and a plan -> per-stage predictions for one image.

Python API (also used by training-time validation):

    from magnet_jax.inference.engine import MagNetPredictor
    predictor = MagNetPredictor.from_config(config)          # loads config.checkpoint.*
    # or MagNetPredictor(plan, backbone, refiners) with models already in memory
    result = predictor.predict(image_rgb_u8)                 # [H, W, 3] uint8 RGB
    result.stages[i].argmax      # np.uint8 [h_i, w_i]: stage 0 at input size, stage i at scale i
    result.final_probs           # jax [H_last, W_last, C]: P at the last scale (the original's output)
    predictor.final_argmax(result)            # np.uint8 at the last scale
    predictor.argmax_at(result.stages[0].probs, label.shape)  # bilinear to any size, then argmax

Each stage is one jit-compiled function (`stages.py`); they are built once per predictor and
reused for every image (same static shapes). `enable_compilation_cache()` turns on JAX's persistent
compilation cache so that a new process reuses compiled stages from disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from magnet_jax.compile_cache import enable_compilation_cache
from magnet_jax.inference.plan import MagNetPlan, plan_from_config
from magnet_jax.inference.stages import make_final_fn, make_refine_stage_fn, make_stage0_fn
from magnet_jax.preprocess import normalize, resize_image

__all__ = ["MagNetPredictor", "MagNetResult", "StageResult", "enable_compilation_cache", "prepare_patches"]

@dataclasses.dataclass
class StageResult:
    """One stage's output. Arrays from the device are fetched to NumPy on first access of the `*_np` helpers."""

    index: int
    size_hw: tuple[int, int]  # resolution of this stage's maps
    probs: jax.Array  # [h, w, C] probabilities P after this stage
    argmax: np.ndarray  # [h, w] uint8
    uncertainty: jax.Array | None = None  # [h, w] 1 - certainty of the upsampled input (stages >= 1)
    error: jax.Array | None = None  # [h, w] smoothed error score (stages >= 1)
    selected: np.ndarray | None = None  # [k] patch indices refined, in selection order
    points: int = 0  # pixels written with refined values
    refined: jax.Array | None = None  # [h, w] bool, the pixels written with refined values (stages >= 1)
    seconds: float = 0.0


@dataclasses.dataclass
class MagNetResult:
    stages: list[StageResult]
    final_probs: jax.Array  # P at the last stage's resolution (the last scale unless refinement was skipped)
    seconds: float = 0.0  # wall time of predict() excluding preprocessing
    preprocess_seconds: float = 0.0
    patches: list[jax.Array] | None = None  # per stage, the device patches [N_i, ih, iw, 3] (keep_patches=True)

    @property
    def timings(self) -> dict[str, float]:
        out = {"preprocess": self.preprocess_seconds}
        out.update({f"stage{s.index}": s.seconds for s in self.stages})
        out["total"] = self.seconds
        return out


def prepare_patches(image: np.ndarray, plan: MagNetPlan) -> list[np.ndarray]:
    """Host preprocessing as the original: per scale, cv2 INTER_LINEAR resize of the whole image,
    patch grid, each patch resized (INTER_LINEAR) to the input size, ImageNet normalisation.

    Returns `[stage0 [1, ih, iw, 3]] + [stage i [N_i, ih, iw, 3] for each refinement stage]` float32;
    stage 0 holds only the first patch of scale 0 (the original's coarse input).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    cw, ch = plan.crop_wh
    scaled = resize_image(image, plan.scales[0])
    first = resize_image(np.ascontiguousarray(scaled[0:ch, 0:cw]), plan.input_wh)
    out = [normalize(first[None])]
    for stage in plan.stages:
        scaled = resize_image(image, stage.scale_wh)
        crops = [
            resize_image(np.ascontiguousarray(scaled[y0:y1, x0:x1]), plan.input_wh) for x0, y0, x1, y1 in stage.crops_px
        ]
        out.append(normalize(np.stack(crops)))
    return out


class MagNetPredictor:
    """MagNet inference for one image at a time, every stage compiled once.

    Args:
        plan: the static plan (`plan.make_plan` / `plan.plan_from_config`).
        backbone: segmentation backbone (NNX, eval mode), `model(x [B, H, W, 3]) -> logits`.
        refiners: one refinement module shared by all stages, or one per refinement stage.
        split_stages: compile each stage as one `jax.jit` (False) or as chained per-phase jits (True);
            default: split on CPU, where it is faster (see `stages.make_refine_stage_fn`).
    """

    def __init__(
        self,
        plan: MagNetPlan,
        backbone: nnx.Module,
        refiners: Sequence[nnx.Module] | nnx.Module,
        *,
        split_stages: bool | None = None,
    ):
        if isinstance(refiners, nnx.Module):
            refiners = [refiners]
        refiners = list(refiners)
        m = plan.num_refiners_expected
        if plan.stages and len(refiners) not in (1, m):
            raise ValueError(
                f"{len(refiners)} refinement modules given; expected 1 (shared) or {m} (one per refinement stage)"
            )
        self.plan = plan
        self.backbone = backbone
        self.refiners = refiners
        bb_graph, self._bb_state = nnx.split(backbone)
        self.backbone_graph = bb_graph
        self._stage0 = make_stage0_fn(bb_graph, dtype=plan.dtype, conv_algorithm=plan.conv_algorithm)
        self._ref_states = []
        self._stage_fns = []
        split_cache: dict[int, tuple] = {}
        for st in plan.stages:
            ref = self.refiner_of(st.index)
            if id(ref) not in split_cache:
                split_cache[id(ref)] = nnx.split(ref)
            ref_graph, ref_state = split_cache[id(ref)]
            self._ref_states.append(ref_state)
            self._stage_fns.append(make_refine_stage_fn(st, plan, bb_graph, ref_graph, split=split_stages))
        self._final_fns: dict[tuple[int, int], object] = {}

    def refiner_of(self, stage_index: int) -> nnx.Module:
        return self.refiners[min(len(self.refiners), stage_index) - 1]

    def refresh_weights(self) -> None:
        """Re-reads the models' current weights (e.g. between training epochs); compiled stages are reused.

        The graph (and so train/eval mode) stays the one captured at construction: build the predictor
        from models in eval mode.
        """
        self._bb_state = nnx.state(self.backbone)
        self._ref_states = [nnx.state(self.refiner_of(st.index)) for st in self.plan.stages]

    def swap_weights(
        self, *, backbone: nnx.Module | None = None, refiners: Sequence[nnx.Module] | nnx.Module | None = None
    ) -> None:
        """Uses these models' weights from now on, with the stages already compiled (no retracing).

        Each new model must have the same architecture (graph) as the one it replaces; a shared refiner
        may replace per-stage ones only if the predictor was built with a shared one too.
        """
        if backbone is not None:
            graph, state = nnx.split(backbone)
            if graph != self.backbone_graph:
                raise ValueError("swap_weights: the new backbone's architecture differs from the compiled one")
            self.backbone, self._bb_state = backbone, state
        if refiners is not None:
            refiners = [refiners] if isinstance(refiners, nnx.Module) else list(refiners)
            if len(refiners) != len(self.refiners):
                raise ValueError(
                    f"swap_weights: {len(refiners)} refiners given, the predictor has {len(self.refiners)}"
                )
            self.refiners = refiners
            self._ref_states = [nnx.state(self.refiner_of(st.index)) for st in self.plan.stages]

    @property
    def backbone_state(self) -> nnx.State:
        """The backbone weights the compiled stages use (pass to functions built on `backbone_graph`)."""
        return self._bb_state

    @classmethod
    def from_config(cls, config, *, backbone: nnx.Module | None = None, refiners=None) -> MagNetPredictor:
        """Plan from `config.magnet`, models from `config.checkpoint.backbone/refiners` unless given."""
        from magnet_jax.weights import load_model_weights, load_refiners

        plan = plan_from_config(config)
        n = int(config.data.num_classes)
        if backbone is None:
            if not str(config.checkpoint.backbone).strip():
                raise ValueError(
                    "config.checkpoint.backbone is empty: give the backbone checkpoint (.pth or converted)"
                )
            backbone = load_model_weights(str(config.checkpoint.backbone).strip(), config.model.backbone, n)
        if refiners is None:
            paths, count = str(config.checkpoint.refiners), plan.num_refiners_expected
            refiners = load_refiners(paths, n, count, refiner=config.model.refiner) if plan.stages else []
        return cls(plan, backbone, refiners)

    # ------------------------------------------------------------------ inference

    def prepare(self, image: np.ndarray) -> list[np.ndarray]:
        """Host-side patches for `image` (see `prepare_patches`)."""
        return prepare_patches(image, self.plan)

    def predict(self, image: np.ndarray, *, keep_probs: bool = True, keep_patches: bool = False) -> MagNetResult:
        """Runs every stage on an RGB uint8 image `[H, W, 3]`.

        Per-stage timings wait for each stage to finish (the next stage needs its output anyway).
        With `keep_probs=False` intermediate stages drop their probability maps (saves memory); with
        `keep_patches=True` the result keeps every stage's device patches (`result.patches`).
        """
        with self.precision():
            result = self._predict(image, keep_probs)
        if not keep_patches:
            result.patches = None
        return result

    def precision(self):
        """Reference mode computes in full float32 on accelerators too (no TF32), like the original."""
        if self.plan.compat == "reference":
            return jax.default_matmul_precision("highest")
        return contextlib.nullcontext()

    def _predict(self, image: np.ndarray, keep_probs: bool) -> MagNetResult:
        t0 = time.perf_counter()
        host = self.prepare(image)
        t1 = time.perf_counter()
        patches = jax.device_put(host)  # the whole image's patches go to the device once
        probs, am = self._stage0(self._bb_state, patches[0])
        am = np.asarray(am)
        t2 = time.perf_counter()
        stages = [StageResult(0, self.plan.input_hw, probs, am, seconds=t2 - t1)]
        for i, (st, fn) in enumerate(zip(self.plan.stages, self._stage_fns, strict=False)):
            ts = time.perf_counter()
            out = fn(self._bb_state, self._ref_states[i], probs, patches[i + 1])
            probs = out["probs"]
            am = np.asarray(out["argmax"])
            if not keep_probs:
                stages[-1].probs = None
            stages.append(
                StageResult(
                    st.index,
                    st.size_hw,
                    probs,
                    am,
                    uncertainty=out["uncertainty"],
                    error=out["error"],
                    selected=np.asarray(out["selected"]),
                    points=int(out["points"]),
                    refined=out["refined"],
                    seconds=time.perf_counter() - ts,
                )
            )
        jax.block_until_ready(probs)
        return MagNetResult(
            stages, probs, seconds=time.perf_counter() - t1, preprocess_seconds=t1 - t0, patches=list(patches)
        )

    def argmax_at(self, probs: jax.Array, size_hw: tuple[int, int]) -> np.ndarray:
        """`argmax(bilinear(ac=False)(probs -> size_hw))` as uint8 `[h, w]` (compiled once per size)."""
        key = (int(probs.shape[0]), int(probs.shape[1]), int(size_hw[0]), int(size_hw[1]))
        if key not in self._final_fns:
            self._final_fns[key] = make_final_fn((key[2], key[3]))
        with self.precision():
            return np.asarray(self._final_fns[key](probs))

    def final_argmax(self, result: MagNetResult, size_hw: tuple[int, int] | None = None) -> np.ndarray:
        """The original's final prediction: P resized to the last scale (or `size_hw`), argmax."""
        return self.argmax_at(result.final_probs, size_hw or self.plan.last_hw)

    def warmup(self) -> float:
        """Compiles every stage on a blank image; returns the seconds spent."""
        t = time.perf_counter()
        h, w = self.plan.scales[-1][1], self.plan.scales[-1][0]
        res = self.predict(np.zeros((h, w, 3), np.uint8))
        self.final_argmax(res)
        return time.perf_counter() - t
