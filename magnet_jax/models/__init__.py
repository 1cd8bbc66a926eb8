"""Segmentation backbones and the refinement module, by the original's names.

Every model is a Flax NNX module on NHWC inputs:
- backbones: `model(images [B, H, W, 3]) -> logits [B, H, W, num_classes]` (the eval
  output, `(out + 0.4 * aux) / 1.4` for models with an auxiliary head);
  `model(images, return_heads=True) -> {"out": ..., "aux": ... or None}` for training.
- `refinement`: `model(first [B, H, W, n], second [B, H, W, n]) -> logits [B, H, W, n]`
  (inference passes fine first, coarse second).
Modules start in eval mode; `model.train()` / `model.eval()` switch BatchNorm and dropout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from flax import nnx

# name -> (module, constructor); imported lazily so that using one model does not
# build the others' code paths.
_REGISTRY: dict[str, tuple[str, str]] = {
    "fpn": ("magnet_jax.models.fpn", "ResnetFPN"),
    "psp": ("magnet_jax.models.psp", "PSPNet"),
    "hrnet18+ocr": ("magnet_jax.models.hrnet_ocr", "hrnet18_ocr"),
    "hrnet48+ocr": ("magnet_jax.models.hrnet_ocr", "hrnet48_ocr"),
    "refinement": ("magnet_jax.models.refinement", "RefinementMagNet"),
    "small": ("magnet_jax.models.small", "SmallSegNet"),  # synthetic demo / tests, not in the original
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
BACKBONE_NAMES: tuple[str, ...] = tuple(n for n in _REGISTRY if n != "refinement")


def model_constructor(name: str) -> Callable[..., nnx.Module]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    module_name, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), attr)


def build_model(name: str, num_classes: int, *, seed: int = 0) -> nnx.Module:
    """Builds model `name` for `num_classes` classes, randomly initialised, in eval mode."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = model_constructor(name)(num_classes, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    model.eval()
    return model
