"""The MagNet predictor: a backbone, refiners and a plan -> per-stage predictions of one image, on every
local device, the whole image at once or tile by tile.

    from magnet_jax.inference.predictor import MagNetPredictor
    predictor = MagNetPredictor.from_config(config)          # plan, models, config.magnet.streamed
    result = predictor.predict(image)       # RGB uint8 [H, W, 3], an ImageSource or a file path
    result.stages[i].argmax      # stage i's argmax: np.uint8 [h_i, w_i] (tiled: a HostMap read by region)
    result.final_probs           # P at the last scale (the original's output; tiled: a HostMap)
    predictor.argmax_at(result.stages[0].probs, label.shape)  # bilinear to any size, then argmax
    result.close()               # a tiled result's map files

`predict` runs the whole image (`stages.py`) or, when `config.magnet.streamed` asks for it or the maps
would not fit (`tiled.needs_streaming`), tile by tile with the maps on the host (`tiled.py`): the same
region kernels (`kernels.py`), so the same pixels. Patch batches are split over the devices of `mesh`
(default: this process's). Compiled functions are built once per predictor and reused for every image.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from magnet_jax.inference import kernels
from magnet_jax.inference.host_maps import HostMap
from magnet_jax.inference.kernels import prepare_patches
from magnet_jax.inference.plan import MagNetPlan, plan_from_config
from magnet_jax.inference.result import MagNetResult, StageResult
from magnet_jax.inference.stages import make_refine_stage_fn
from magnet_jax.inference.tiled import StreamOptions, needs_streaming, predict_tiled
from magnet_jax.rasters.large_io import ImageSource, open_image
from magnet_jax.sharding import make_mesh, replicated

__all__ = ["MagNetPredictor", "MagNetResult", "StageResult", "prepare_patches"]


class MagNetPredictor:
    """MagNet inference for one image at a time, every stage compiled once.

    Args:
        plan: the static plan (`plan.make_plan` / `plan.plan_from_config`).
        backbone: segmentation backbone (NNX, eval mode), `model(x [B, H, W, 3]) -> logits`.
        refiners: one refinement module shared by all stages, or one per refinement stage.
        mesh: the devices the patch batches are split over (default: this process's local devices).
        stream: `tiled.StreamOptions` (`config.magnet.streamed` / `tile_patches` / `stream_dtype`).
        split_stages: compile each whole-image stage as one `jax.jit` (False) or as chained per-phase jits
            (True); default: split on CPU, where it is faster (see `stages.make_refine_stage_fn`).
    """

    def __init__(
        self,
        plan: MagNetPlan,
        backbone: nnx.Module,
        refiners: Sequence[nnx.Module] | nnx.Module,
        *,
        mesh: jax.sharding.Mesh | None = None,
        stream: StreamOptions | None = None,
        split_stages: bool | None = None,
    ):
        refiners = [refiners] if isinstance(refiners, nnx.Module) else list(refiners)
        m = plan.num_refiners_expected
        if plan.stages and len(refiners) not in (1, m):
            raise ValueError(
                f"{len(refiners)} refinement modules given; expected 1 (shared) or {m} (one per refinement stage)"
            )
        self.plan, self.stream = plan, stream or StreamOptions()
        if self.stream.mode == "on" and plan.compat != "paper":
            raise ValueError(
                "config.magnet.streamed=on runs compat='paper' only (the reference mode's PyTorch tie-breaking "
                "needs the whole score map); set config.magnet.streamed=off or config.magnet.compat=paper"
            )
        self.mesh = mesh or make_mesh(jax.local_devices())
        self.backbone, self.refiners = backbone, refiners
        self.backbone_graph, _ = nnx.split(backbone)
        self._refiner_graphs = {id(r): nnx.split(r)[0] for r in refiners}
        self._load_states()
        self._stage0 = kernels.make_stage0_fn(self.backbone_graph, dtype=plan.dtype, conv_algorithm=plan.conv_algorithm)
        self._stage_fns = [
            make_refine_stage_fn(
                st, plan, self.backbone_graph, self._refiner_graphs[id(self.refiner_of(st.index))],
                mesh=self.mesh, split=split_stages,
            )  # fmt: skip
            for st in plan.stages
        ]
        self._tile_fns: list | None = None  # built on the first tiled image
        self._argmax_fns: dict[tuple[int, int], object] = {}
        self._batch_fns: dict[int, tuple] = {}

    def _load_states(self) -> None:
        rep = replicated(self.mesh)
        self._bb_state = jax.device_put(nnx.state(self.backbone), rep)
        states = {id(r): jax.device_put(nnx.state(r), rep) for r in self.refiners}
        self._ref_states = [states[id(self.refiner_of(st.index))] for st in self.plan.stages]

    def refiner_of(self, stage_index: int) -> nnx.Module:
        return self.refiners[min(len(self.refiners), stage_index) - 1]

    def refresh_weights(self) -> None:
        """Re-reads the models' current weights; compiled stages are reused (build from models in eval mode:
        the graph, and so train/eval mode, stays the one captured at construction)."""
        self._load_states()

    def swap_weights(
        self, *, backbone: nnx.Module | None = None, refiners: Sequence[nnx.Module] | nnx.Module | None = None
    ) -> None:
        """Uses these models' weights from now on, with the stages already compiled (no retracing).

        Each new model must have the same architecture (graph) as the one it replaces; a shared refiner
        may replace per-stage ones only if the predictor was built with a shared one too.
        """
        if backbone is not None:
            if nnx.split(backbone)[0] != self.backbone_graph:
                raise ValueError("swap_weights: the new backbone's architecture differs from the compiled one")
            self.backbone = backbone
        if refiners is not None:
            refiners = [refiners] if isinstance(refiners, nnx.Module) else list(refiners)
            if len(refiners) != len(self.refiners):
                raise ValueError(
                    f"swap_weights: {len(refiners)} refiners given, the predictor has {len(self.refiners)}"
                )
            graphs = {id(new): self._refiner_graphs[id(old)] for old, new in zip(self.refiners, refiners, strict=True)}
            self.refiners, self._refiner_graphs = refiners, graphs
        self._load_states()

    @property
    def backbone_state(self) -> nnx.State:
        """The backbone weights the compiled stages use (pass to functions built on `backbone_graph`)."""
        return self._bb_state

    def refiner_state(self, i: int) -> nnx.State:
        """The weights of refinement stage `i + 1` (replicated on the mesh)."""
        return self._ref_states[i]

    @classmethod
    def from_config(cls, config, *, backbone: nnx.Module | None = None, refiners=None, **stream) -> MagNetPredictor:
        """Plan, streaming (+ `stream` fields) from `config.magnet`; models from `config.checkpoint.*` unless given."""
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
        return cls(plan, backbone, refiners, stream=StreamOptions.from_config(config, **stream))

    # ------------------------------------------------------------------ inference

    @property
    def tiled(self) -> bool:
        """Whether `predict` runs tile by tile (`config.magnet.streamed`, see `tiled.needs_streaming`)."""
        return needs_streaming(self.plan, self.stream)

    def precision(self):
        """Reference mode computes in full float32 on accelerators too (no TF32), like the original."""
        if self.plan.compat == "reference":
            return jax.default_matmul_precision("highest")
        return contextlib.nullcontext()

    def predict(
        self, image, *, keep_probs: bool = True, keep_patches: bool = False, keep_labels: bool = False,
        work_dir: str | None = None, prepared: list[np.ndarray] | None = None,
    ) -> MagNetResult:  # fmt: skip
        """Runs every stage on an image: RGB uint8 `[H, W, 3]`, an `ImageSource` or a file path.

        Whole image: per-stage timings wait for each stage; `keep_probs=False` drops intermediate
        probability maps, `keep_patches=True` keeps every stage's device patches. Tiled (`self.tiled`):
        maps go to `work_dir` (default `stream.work_dir`, else the system's temporary folder),
        `keep_probs` / `keep_labels` keep every stage's P / argmax map; close the result to remove them.
        `prepared`: the whole image's `prepare_patches`, when already made (e.g. by an input thread).
        """
        if self.tiled:
            source = image if isinstance(image, ImageSource) else None
            if source is None:
                is_path = isinstance(image, (str, os.PathLike))
                source = open_image(image) if is_path else ImageSource.from_array(image)
            fns = self._tiled_fns()
            with self.precision():
                return predict_tiled(self, fns, source, keep_probs=keep_probs, keep_labels=keep_labels,
                                     work_dir=work_dir)  # fmt: skip
        if isinstance(image, (str, os.PathLike, ImageSource)):
            source = open_image(image) if not isinstance(image, ImageSource) else image
            image = source.whole()
        with self.precision():
            result = self._predict_whole([image], keep_probs, None if prepared is None else [prepared])[0]
        if not keep_patches:
            result.patches = None
        return result

    def _tiled_fns(self) -> list:
        if self._tile_fns is None:
            self._tile_fns = [
                jax.jit(kernels.make_refine_fn(
                    self.backbone_graph, self._refiner_graphs[id(self.refiner_of(st.index))], self.mesh,
                    batch=kernels.patch_batch(st, self.plan), boxes=st.boxes, input_hw=self.plan.input_hw,
                    full_hw=st.size_hw, dtype=self.plan.dtype, conv_algorithm=self.plan.conv_algorithm,
                ))
                for st in self.plan.stages
            ]  # fmt: skip
        return self._tile_fns

    def stage0(self, patch: np.ndarray):
        """The coarse pass on the `[1, ih, iw, 3]` input: `(probs [ih, iw, C], argmax [ih, iw] uint8)`."""
        return self._stage0(self._bb_state, jax.device_put(patch, replicated(self.mesh)))

    def predict_batch(self, images: Sequence[np.ndarray], *, prepared: Sequence | None = None) -> list[MagNetResult]:
        """Several same-size RGB uint8 images `[H, W, 3]` through every stage per compiled call (the stage
        functions vmapped over images, compiled once per count): `config.eval.batch_images`, for
        accelerators. Whole-image runs only; one image is `predict`'s run."""
        if self.tiled:
            raise ValueError("config.eval.batch_images > 1 runs whole images: set config.magnet.streamed=off")
        with self.precision():
            return self._predict_whole(list(images), True, prepared)

    def _batched(self, n: int):
        """The stage functions for `n` images per call (`n == 1`: the predictor's own)."""
        if n == 1:
            return self._stage0, self._stage_fns
        if n not in self._batch_fns:
            self._batch_fns[n] = (
                jax.jit(jax.vmap(self._stage0, in_axes=(None, 0))),
                [jax.jit(jax.vmap(fn, in_axes=(None, None, 0, 0))) for fn in self._stage_fns],
            )
        return self._batch_fns[n]

    def _predict_whole(self, images: list, keep_probs: bool, prepared: Sequence | None) -> list[MagNetResult]:
        t0 = time.perf_counter()
        prepared = prepared or [None] * len(images)
        host = [prepare_patches(im, self.plan) if p is None else p for im, p in zip(images, prepared, strict=True)]
        t1 = time.perf_counter()
        n = len(host)
        stage0, stage_fns = self._batched(n)
        at = (lambda x, b: x) if n == 1 else (lambda x, b: None if x is None else x[b])  # noqa: E731
        stacked = host[0] if n == 1 else [np.stack(parts) for parts in zip(*host, strict=True)]
        patches = jax.device_put(stacked, replicated(self.mesh))  # the images' patches go to the devices once
        probs, am = stage0(self._bb_state, patches[0])
        am = np.asarray(am)
        t2 = time.perf_counter()
        per_image = [[StageResult(0, self.plan.input_hw, at(probs, b), at(am, b), seconds=(t2 - t1) / n)]
                     for b in range(n)]  # fmt: skip
        for i, (st, fn) in enumerate(zip(self.plan.stages, stage_fns, strict=True)):
            ts = time.perf_counter()
            out = fn(self._bb_state, self._ref_states[i], probs, patches[i + 1])
            probs, am, selected = out["probs"], np.asarray(out["argmax"]), np.asarray(out["selected"])
            points, seconds = np.asarray(out["points"]), (time.perf_counter() - ts) / n
            for b, stages in enumerate(per_image):
                if not keep_probs:
                    stages[-1].probs = None
                stages.append(StageResult(
                    st.index, st.size_hw, at(probs, b), at(am, b), uncertainty=at(out["uncertainty"], b),
                    error=at(out["error"], b), selected=at(selected, b), points=int(at(points, b)),
                    refined=at(out["refined"], b), seconds=seconds,
                ))  # fmt: skip
        jax.block_until_ready(probs)
        t3 = time.perf_counter()
        return [
            MagNetResult(stages, stages[-1].probs, seconds=(t3 - t1) / n, preprocess_seconds=(t1 - t0) / n,
                         patches=[at(p, b) for p in patches])  # fmt: skip
            for b, stages in enumerate(per_image)
        ]

    def argmax_at(self, probs: jax.Array | HostMap, size_hw: tuple[int, int]) -> np.ndarray:
        """`argmax(bilinear(ac=False)(probs -> size_hw))` as uint8 `[h, w]` (compiled once per size).

        A `HostMap` (tiled results) is read whole when small, else resized in row bands (`tiled.argmax_bands`).
        """
        if isinstance(probs, HostMap):
            from magnet_jax.inference.tiled import argmax_bands

            if probs.nbytes > (256 << 20):
                return argmax_bands(probs, size_hw)
            probs = probs.read(0, probs.shape[0], 0, probs.shape[1])
        key = (int(probs.shape[0]), int(probs.shape[1]), int(size_hw[0]), int(size_hw[1]))
        if key not in self._argmax_fns:
            self._argmax_fns[key] = kernels.make_argmax_fn((key[2], key[3]))
        with self.precision():
            return np.asarray(self._argmax_fns[key](probs))

    def final_argmax(self, result: MagNetResult, size_hw: tuple[int, int] | None = None) -> np.ndarray:
        """The original's final prediction: P resized to the last scale (or `size_hw`), argmax."""
        return self.argmax_at(result.final_probs, size_hw or self.plan.last_hw)

    def warmup(self) -> float:
        """Compiles every stage on a blank image (whole-image runs); returns the seconds spent."""
        t = time.perf_counter()
        if not self.tiled:
            h, w = self.plan.scales[-1][1], self.plan.scales[-1][0]
            self.final_argmax(self.predict(np.zeros((h, w, 3), np.uint8)))
        return time.perf_counter() - t
