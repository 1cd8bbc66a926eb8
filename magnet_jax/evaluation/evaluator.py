"""`Evaluator`: MagNet over a dataset split, every view from one pass per image.

Views (each a confusion matrix summed over the split, as the original's test script):
- `coarse`: stage 0's P, the backbone on the whole image at the first scale;
- `stages`: P after every stage (stage 0 is `coarse`, the last is `refined`, MagNet's output);
- `patch` (optional, `patch_view=True`): the backbone alone on every patch of the finest scale,
  stitched with overlaps averaged, no refinement (what patch-only segmentation would give).
Each view's probabilities are resized bilinear(align_corners=False) to the label's resolution, then
argmax. The evaluator holds one compiled predictor: `swap_weights` replaces its weights without
retracing (validation during training), and the sweeps change only what the plan changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.evaluation.memory import PeakMemory
from magnet_jax.evaluation.results import build_results
from magnet_jax.inference.engine import MagNetPredictor, MagNetResult
from magnet_jax.inference.stages import effective_batch
from magnet_jax.metrics import ConfusionMatrix
from magnet_jax.models.layers import conv_compute_dtype
from magnet_jax.ops.conv import forward_algorithm
from magnet_jax.ops.ensemble import ensemble_patches


class EvaluationInterrupted(RuntimeError):
    """A sample failed mid-split; `results` holds what was computed before it (marked partial)."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


def make_patch_view_fn(predictor: MagNetPredictor) -> Callable[[nnx.State, jax.Array], jax.Array] | None:
    """`fn(backbone_state, patches [N, ih, iw, 3]) -> probs [H, W, C]` at the finest scale (jitted), or None
    for a plan without refinement stages: softmax of the backbone on every patch of the grid, pasted
    into the scale's map with overlaps averaged."""
    plan = predictor.plan
    if not plan.stages:
        return None
    stage = plan.stages[-1]
    n = stage.n_total
    batch = max(1, min(effective_batch(stage, plan.patch_batch_size), n))
    n_batches = -(-n // batch)
    graph = predictor.backbone_graph

    @jax.jit
    def patch_view(backbone_state, patches):
        padded = jnp.concatenate([patches, jnp.broadcast_to(patches[:1], (n_batches * batch - n,) + patches.shape[1:])])

        def one(images):
            with conv_compute_dtype(plan.dtype), forward_algorithm(plan.conv_algorithm):  # as the stages run it
                logits = nnx.merge(graph, backbone_state)(images)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        probs = jax.lax.map(one, padded.reshape((n_batches, batch) + patches.shape[1:]))
        probs = probs.reshape((n_batches * batch,) + probs.shape[2:])[:n]
        return ensemble_patches(probs, stage.ratios, stage.scale_wh, "average")[0]

    return patch_view


class Evaluator:
    """Evaluates one predictor on sources (`source[i] -> {"image", "label", "name"}`).

    Args:
        predictor: the compiled MagNet predictor (plan + models).
        dataset: the resolved dataset (`magnet_jax.data.dataset_spec(config)`): `num_classes`,
            `ignore_label`, `miou_classes`, `class_names`, `metric`, `palette`.
        patch_view: also score the backbone alone on the finest patches (one more backbone pass per patch).
    """

    def __init__(self, predictor: MagNetPredictor, dataset: Any, *, patch_view: bool = False):
        self.predictor = predictor
        self.dataset = dataset
        self._patch_fn = make_patch_view_fn(predictor) if patch_view else None

    @property
    def plan(self):
        return self.predictor.plan

    def swap_weights(
        self, *, backbone: nnx.Module | None = None, refiners: Sequence[nnx.Module] | nnx.Module | None = None
    ) -> None:
        """New weights for the same architecture; compiled stages are reused."""
        self.predictor.swap_weights(backbone=backbone, refiners=refiners)

    def _matrices(self) -> dict[str, Any]:
        ds = self.dataset
        make = lambda: ConfusionMatrix(ds.num_classes, ds.ignore_label, ds.miou_classes)  # noqa: E731
        # one per stage the plan runs (n_patches 0: the coarse stage only, so MagNet's output is the coarse one)
        cms: dict[str, Any] = {"stages": [make() for _ in range(len(self.plan.stages) + 1)]}
        if self._patch_fn is not None:
            cms["patch"] = make()
        return cms

    def _score(self, cms: dict, result: MagNetResult, label: np.ndarray) -> dict[str, np.ndarray]:
        """Updates every view's confusion matrix with one image; returns the predictions `[h, w]` uint8."""
        hw = label.shape[:2]
        preds = {}
        for i, stage in enumerate(result.stages):
            pred = self.predictor.argmax_at(stage.probs, hw)
            cms["stages"][i].update(label, pred)
            preds[f"stage{i}"] = pred
        preds["coarse"], preds["refined"] = preds["stage0"], preds[f"stage{len(result.stages) - 1}"]
        if self._patch_fn is not None:
            with self.predictor.precision():
                probs = self._patch_fn(self.predictor.backbone_state, result.patches[-1])
            preds["patch"] = self.predictor.argmax_at(probs, hw)
            cms["patch"].update(label, preds["patch"])
        return preds

    def run(
        self,
        source,
        *,
        max_images: int = -1,
        progress: bool = True,
        desc: str = "evaluate",
        warmup: bool = False,
        on_image: Callable[[int, dict, dict[str, np.ndarray]], None] | None = None,
    ) -> dict:
        """Evaluates the first `max_images` samples (all if < 0) of `source`; returns the results dict
        (`results.build_results`: `miou`, `iou`, `confusion`, timings, memory, compute).

        `warmup`: compile every stage on a blank image first, so that `seconds_per_image` (the median
        over images) excludes compilation and `compile_seconds` reports it. `on_image(i, sample, preds)`
        is called after each image (pictures). A sample that fails to load raises
        `EvaluationInterrupted` carrying the partial results of the images before it.
        """
        total = len(source) if max_images is None or max_images < 0 else min(len(source), int(max_images))
        cms = self._matrices()
        memory = PeakMemory()
        compile_s = self.predictor.warmup() if warmup else None
        seconds: list[float] = []
        points = np.zeros(len(self.plan.stages), np.float64)
        bar = _progress_bar(total, desc) if progress and jax.process_index() == 0 else None
        done = 0
        try:
            for i in range(total):
                try:
                    sample = source[i]
                except Exception as e:  # noqa: BLE001 - reported with the sample index, results kept
                    partial = self._results(cms, done, seconds, points, compile_s, memory, partial=True)
                    partial["error"] = f"sample {i}: {e}"
                    raise EvaluationInterrupted(f"evaluation stopped at sample {i} of {total}: {e}", partial) from e
                label = np.asarray(sample["label"])
                t = time.perf_counter()
                result = self.predictor.predict(sample["image"], keep_patches=self._patch_fn is not None)
                seconds.append(result.seconds + result.preprocess_seconds)
                points += [s.points for s in result.stages[1:]]
                preds = self._score(cms, result, label)
                done += 1
                memory.sample()
                if on_image is not None:
                    on_image(i, sample, preds)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(
                        f"coarse {100 * cms['stages'][0].miou():.1f}, "
                        f"MagNet {100 * cms['stages'][-1].miou():.1f} mIoU, "
                        f"{time.perf_counter() - t:.2f} s/img",
                        refresh=False,
                    )
        finally:
            if bar is not None:
                bar.close()
        return self._results(cms, done, seconds, points, compile_s, memory, partial=False)

    def _results(self, cms, done, seconds, points, compile_s, memory, *, partial: bool) -> dict:
        return build_results(
            self.dataset,
            self.plan,
            stage_matrices=[cm.matrix for cm in cms["stages"]],
            patch_matrix=cms["patch"].matrix if "patch" in cms else None,
            num_images=done,
            seconds=seconds,
            compile_seconds=compile_s,
            points_refined=(points / max(done, 1)).tolist(),
            memory=memory.read(),
            partial=partial,
        )


def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, dynamic_ncols=True)


def save_evaluation_picture(path: Path, sample: dict, preds: dict[str, np.ndarray], dataset: Any) -> None:
    """image | ground truth | coarse | (patch |) MagNet, captioned, with the class legend."""
    from magnet_jax.inference import figures

    views = {"coarse": preds["coarse"]}
    if "patch" in preds:
        views["patch"] = preds["patch"]
    views["MagNet"] = preds["refined"]
    figures.evaluation_figure(
        sample["image"], np.asarray(sample["label"]), views, dataset.class_names, dataset.palette, path,
        title=str(sample.get("name", "")),
    )
