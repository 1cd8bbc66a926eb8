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

from collections.abc import Callable

from flax import nnx

from magnet_jax.models.fpn import ResnetFPN
from magnet_jax.models.hrnet_ocr import hrnet18_ocr, hrnet48_ocr
from magnet_jax.models.psp import PSPNet
from magnet_jax.models.refinement import RefinementMagNet
from magnet_jax.models.small import SmallSegNet

BACKBONE = "backbone"
REFINER = "refiner"

# name -> (kind, constructor `Model(num_classes, *, rngs, options with defaults)`; CONTRIBUTING.md).
# A new model: its file, its import above and one line here (tests/test_models_contract.py checks it).
_REGISTRY: dict[str, tuple[str, Callable[..., nnx.Module]]] = {
    "fpn": (BACKBONE, ResnetFPN),
    "psp": (BACKBONE, PSPNet),
    "hrnet18+ocr": (BACKBONE, hrnet18_ocr),
    "hrnet48+ocr": (BACKBONE, hrnet48_ocr),
    "refinement": (REFINER, RefinementMagNet),
    "small": (BACKBONE, SmallSegNet),  # synthetic demo / tests, not in the original
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
BACKBONE_NAMES: tuple[str, ...] = tuple(n for n, (kind, _) in _REGISTRY.items() if kind == BACKBONE)
REFINER_NAMES: tuple[str, ...] = tuple(n for n, (kind, _) in _REGISTRY.items() if kind == REFINER)
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
    """The constructor of registered model `name`; ValueError naming the valid ones otherwise."""
    model_kind(name)
    return _REGISTRY[name][1]


def build_model(name: str, num_classes: int, *, seed: int = 0) -> nnx.Module:
    """Builds model `name` for `num_classes` classes, randomly initialised, in eval mode."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = model_constructor(name)(num_classes, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    model.eval()
    return model
