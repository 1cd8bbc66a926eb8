"""Validation during training, on the single evaluator: one compiled predictor per run, weights swapped.

- backbone runs: the coarse (stage-0) mIoU of the model being trained;
- refiner runs: MagNet's mIoU with the refiner being trained (a per-stage refiner: the plan up to its
  stage, earlier stages with the refiners this workdir already trained; a shared one: every stage).
The first call builds the predictor (and compiles its stages); later calls swap in the new weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flax import nnx

from magnet_jax.evaluation import Evaluator
from magnet_jax.inference.plan import MagNetPlan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.tiled import StreamOptions


class Validator:
    """`validator(model) -> {"miou": ..., ...}` on `source` (the val split), for one training run.

    Args:
        plan: the MagNet plan of the run's validation (already truncated to the stages it scores).
        dataset: the resolved dataset (class names, mIoU classes, ignore label, metric).
        source: `source[i] -> {"image", "label", "name"}`.
        max_images: images scored (< 0: all).
        role: "backbone" (the model is the backbone; coarse only) or "refiner" (the model is the
            refiner of the last stage of `plan`, or the shared one).
        backbone: the frozen backbone (refiner runs).
        earlier_refiners: the refiners of the stages before the last (per-stage refiner runs).
        stream: whole image or tile by tile (`config.magnet.streamed`), as `--mode=evaluate` runs.
    """

    def __init__(
        self,
        plan: MagNetPlan,
        dataset: Any,
        source,
        *,
        max_images: int,
        role: str,
        backbone: nnx.Module | None = None,
        earlier_refiners: Sequence[nnx.Module] = (),
        shared: bool = False,
        stream: StreamOptions | None = None,
    ):
        if role not in ("backbone", "refiner"):
            raise ValueError(f"Validator role: expected 'backbone' or 'refiner', got {role!r}")
        self.plan, self.dataset, self.source, self.max_images = plan, dataset, source, int(max_images)
        self.role, self.backbone, self.earlier, self.shared = role, backbone, list(earlier_refiners), shared
        self.stream = stream  # config.magnet.streamed: validation runs as evaluation does
        self._evaluator: Evaluator | None = None

    def _refiners(self, model: nnx.Module) -> list[nnx.Module]:
        return [model] if self.shared else self.earlier + [model]

    def __call__(self, model: nnx.Module) -> dict:
        if self._evaluator is None:
            if self.role == "backbone":
                predictor = MagNetPredictor(self.plan, model, [], stream=self.stream)
            else:
                predictor = MagNetPredictor(self.plan, self.backbone, self._refiners(model), stream=self.stream)
            self._evaluator = Evaluator(predictor, self.dataset)
        elif self.role == "backbone":
            self._evaluator.swap_weights(backbone=model)
        else:
            self._evaluator.swap_weights(refiners=self._refiners(model))
        res = self._evaluator.run(self.source, max_images=self.max_images, progress=False)
        if self.role == "backbone":
            return {"miou": float(res["miou"]["coarse"])}
        return {"miou": float(res["miou"]["refined"]), "coarse_miou": float(res["miou"]["coarse"])}
