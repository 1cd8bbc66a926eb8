"""Segmentation backbones and refiners, by the original's names, in one registry by kind.

Every model is a Flax NNX module on NHWC inputs:
- backbones: `model(images [B, H, W, 3]) -> logits [B, H, W, num_classes]` (the eval
  output, `(out + 0.4 * aux) / 1.4` for models with an auxiliary head);
  `model(images, return_heads=True) -> {"out": ..., "aux": ... or None}` for training.
- refiners (`refinement`): `model(first [B, H, W, n], second [B, H, W, n]) -> logits [B, H, W, n]`
  on probabilities; `magnet_jax.models.refinement.refine` builds their inputs and calls them
  (inference and training alike).
Modules start in eval mode; `model.train()` / `model.eval()` switch BatchNorm and dropout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from flax import nnx

BACKBONE = "backbone"
REFINER = "refiner"

# name -> (kind, module, constructor); imported lazily so that using one model does not
# build the others' code paths. A new model: its file plus one line here.
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "fpn": (BACKBONE, "magnet_jax.models.fpn", "ResnetFPN"),
    "psp": (BACKBONE, "magnet_jax.models.psp", "PSPNet"),
    "hrnet18+ocr": (BACKBONE, "magnet_jax.models.hrnet_ocr", "hrnet18_ocr"),
    "hrnet48+ocr": (BACKBONE, "magnet_jax.models.hrnet_ocr", "hrnet48_ocr"),
    "refinement": (REFINER, "magnet_jax.models.refinement", "RefinementMagNet"),
    "small": (BACKBONE, "magnet_jax.models.small", "SmallSegNet"),  # synthetic demo / tests, not in the original
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
BACKBONE_NAMES: tuple[str, ...] = tuple(n for n, (kind, _, _) in _REGISTRY.items() if kind == BACKBONE)
REFINER_NAMES: tuple[str, ...] = tuple(n for n, (kind, _, _) in _REGISTRY.items() if kind == REFINER)
_NAMES_OF_KIND = {BACKBONE: BACKBONE_NAMES, REFINER: REFINER_NAMES}


def model_kind(name: str) -> str:
    """'backbone' or 'refiner' for a registered model name; ValueError naming the valid ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name][0]


def check_model_name(name: str, kind: str, field: str) -> None:
    """Raises a one-line ValueError unless `name` is a registered model of `kind` ('backbone' | 'refiner').

    `field` names where the name came from (e.g. `config.model.backbone`) and starts the message.
    """
    if kind not in _NAMES_OF_KIND:
        raise ValueError(f"{field}: unknown model kind {kind!r}; expected {BACKBONE!r} or {REFINER!r}")
    valid = ", ".join(_NAMES_OF_KIND[kind])
    if name in _NAMES_OF_KIND[kind]:
        return
    if name in _REGISTRY:
        raise ValueError(f"{field}: {name!r} is a {_REGISTRY[name][0]}; expected a {kind}: {valid}")
    raise ValueError(f"{field}: unknown model {name!r}; expected a {kind}: {valid}")


def model_constructor(name: str) -> Callable[..., nnx.Module]:
    model_kind(name)  # unknown names are refused with the list of valid ones
    _, module_name, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), attr)


def build_model(name: str, num_classes: int, *, seed: int = 0) -> nnx.Module:
    """Builds model `name` for `num_classes` classes, randomly initialised, in eval mode."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = model_constructor(name)(num_classes, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    model.eval()
    return model
