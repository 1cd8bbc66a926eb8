"""What each kind of run trains: the task contract `training.trainer.train` runs, and its two tasks.

A task says what differs between a backbone run and a refiner run: the model it starts from, the arrays a
step reads besides its state (`extra`: the refiner's frozen backbone), the step (its loss and confusion
matrices on `training.step`'s shared update), the model's inputs for precise BatchNorm, the confusion matrices
summarised per step / epoch, and the meta recorded with each checkpoint for resume. Everything else (optimizer,
state, loop, validation, export) is the trainer's, the same for both.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar, Protocol

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.sharding import replicate
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import ModelDef, split_model


class Task(Protocol):
    """The contract of a task (`BackboneTask`, `RefinerTask`)."""

    batch_keys: ClassVar[tuple[str, ...]]  # what a training batch holds
    views: ClassVar[dict[str, str]]  # step metric `conf*` -> suffix of its `iou*` / `miou*` summary

    def init_model(self, spec: RunSpec) -> nnx.Module:
        """The model the run trains, before its first step."""
        ...

    def extra(self, mesh: Mesh | None) -> Any:
        """What the step reads besides its state, replicated over `mesh`."""
        ...

    def make_step(self, spec: RunSpec, model_def: ModelDef, tx: optax.GradientTransformation, schedule, mesh):
        """`step(state, extra, batch) -> (state, metrics)`, jitted (`training.step.make_train_step`)."""
        ...

    def model_inputs(self, spec: RunSpec, extra: Any, batch: dict) -> tuple:
        """The trained model's call arguments on `batch` (precise BatchNorm)."""
        ...

    def meta(self, spec: RunSpec) -> dict:
        """What each checkpoint records; a resume under another value is refused."""
        ...

    def before_resume(self, spec: RunSpec, checkpoints: Path) -> None:
        """Runs before the loop looks for checkpoints to resume from."""
        ...


def initial_backbone(spec: RunSpec) -> nnx.Module:
    """The model a backbone run starts from: `spec.init_from` weights, else a seeded random init."""
    from magnet_jax.models import build_model

    if spec.init_from:
        from magnet_jax.weights import load_model_weights

        return load_model_weights(spec.init_from, spec.model, spec.num_classes)
    return build_model(spec.model, spec.num_classes, seed=spec.seed)


class BackboneTask:
    """A segmentation backbone: `spec.loss` on `out` + `spec.aux_weight` x the same on `aux` (`backbone_step`)."""

    batch_keys: ClassVar[tuple[str, ...]] = ("image", "label")  # [B, H, W, 3], [B, H, W]
    views: ClassVar[dict[str, str]] = {"conf": ""}

    def init_model(self, spec: RunSpec) -> nnx.Module:
        return initial_backbone(spec)

    def extra(self, mesh: Mesh | None) -> tuple:
        return ()

    def make_step(self, spec: RunSpec, model_def: ModelDef, tx: optax.GradientTransformation, schedule, mesh):
        from magnet_jax.training.backbone_step import make_backbone_step

        step = make_backbone_step(
            model_def, tx, schedule, num_classes=spec.num_classes, ignore_label=spec.ignore_label,
            aux_weight=spec.aux_weight, mesh=mesh, fast_conv=spec.fast_conv, loss=spec.loss,
            ohem_thresh=spec.ohem_thresh, ohem_min_kept=spec.ohem_min_kept,
        )  # fmt: skip
        return lambda state, extra, batch: step(state, batch)  # a backbone step reads nothing besides its state

    def model_inputs(self, spec: RunSpec, extra: tuple, batch: dict) -> tuple:
        return (batch["image"],)

    def meta(self, spec: RunSpec) -> dict:
        return spec.identity()

    def before_resume(self, spec: RunSpec, checkpoints: Path) -> None:
        return None


class RefinerTask:
    """A refinement module on the frozen `backbone` (`refiner_step`: its inputs from the backbone in eval mode,
    `spec.loss` on its logits); checkpoints record the backbone's digest (`frozen_backbone`)."""

    batch_keys: ClassVar[tuple[str, ...]] = ("coarse_image", "fine_image", "label", "box")
    views: ClassVar[dict[str, str]] = {"conf_coarse": "_coarse", "conf_fine": "_fine", "conf_aggre": "_aggre"}

    def __init__(self, backbone: nnx.Module):
        self.backbone_def, *self._frozen = split_model(backbone)
        self.digest = model_digest(backbone)

    def init_model(self, spec: RunSpec) -> nnx.Module:
        from magnet_jax.models import build_model

        return build_model(spec.model, spec.num_classes, seed=spec.seed)

    def extra(self, mesh: Mesh | None) -> tuple:
        """The backbone's (params, batch_stats, rngs), replicated."""
        return replicate(tuple(self._frozen), mesh)

    def make_step(self, spec: RunSpec, model_def: ModelDef, tx: optax.GradientTransformation, schedule, mesh):
        from magnet_jax.training.refiner_step import make_refiner_step

        return make_refiner_step(
            self.backbone_def, model_def, tx, schedule, num_classes=spec.num_classes, ignore_label=spec.ignore_label,
            input_hw=spec.input_hw, input_order=spec.input_order, ohem_thresh=spec.ohem_thresh,
            ohem_min_kept=spec.ohem_min_kept, loss=spec.loss, mesh=mesh, fast_conv=spec.fast_conv,
            frozen_conv=spec.frozen_conv,
        )  # fmt: skip

    def model_inputs(self, spec: RunSpec, extra: tuple, batch: dict) -> tuple:
        from magnet_jax.training.refiner_step import refiner_model_inputs

        return refiner_model_inputs(self.backbone_def, extra, batch, spec.input_hw, spec.input_order,
                                    spec.frozen_conv)  # fmt: skip

    def meta(self, spec: RunSpec) -> dict:
        return dict(spec.identity(), frozen_backbone=self.digest)

    def before_resume(self, spec: RunSpec, checkpoints: Path) -> None:
        """Checkpoints trained on another backbone (it trained further since: `max_steps`, an interrupted run)
        would resume into a model no uninterrupted run gives: they are set aside and the refiner starts again."""
        from magnet_jax.training.checkpointing import set_aside_if_changed

        moved = set_aside_if_changed(checkpoints, "frozen_backbone", self.digest)
        if moved is not None:
            print(f"note: {spec.name}: its checkpoints were trained on an earlier state of the backbone, which has "
                  f"trained since; it trains again from step 0 (the old checkpoints: {moved})", file=sys.stderr,
                  flush=True)  # fmt: skip


def model_digest(model: nnx.Module) -> str:
    """sha256 (16 hex digits) of a model's parameters and BatchNorm statistics: which frozen backbone a
    refiner's checkpoints were trained on."""
    import hashlib

    _, params, batch_stats, _ = split_model(model)
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((params, batch_stats)):
        h.update(np.ascontiguousarray(jax.device_get(leaf)).tobytes())
    return h.hexdigest()[:16]
