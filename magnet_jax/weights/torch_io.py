"""Reading the original MagNet's PyTorch `.pth` files into our models, strictly.

What is accepted, and how it is read:
- The file is read with `torch.load(..., map_location="cpu", weights_only=True)`: only
  tensors and plain containers are unpickled, never arbitrary objects.
- The state dict is the file itself, or its `"state_dict"` / `"model_state_dict"` entry
  when the file is a full training checkpoint (other entries such as the epoch or the
  optimizer state are ignored).
- A `module.` prefix on every key (DataParallel) is stripped; so is the `model.` prefix
  of the original's training wrapper (backbone files), whose `loss.*` entries (the loss's
  class weights) are ignored. `num_batches_tracked` counters are ignored.
- Every remaining key must map onto the model and every model variable must be present
  with the right shape; otherwise `StateDictMismatchError` lists the missing, unexpected
  and misshaped keys. (The original loads with `strict=False` and would silently keep
  random weights; we never do.) Layout changes: conv kernels OIHW -> HWIO, BatchNorm
  weight/running_mean/running_var -> scale/mean/var (`magnet_jax.models.state_dict`).

PyTorch is imported only inside this module's functions (it is needed for `.pth` files only).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from magnet_jax.models import build_model
from magnet_jax.models.state_dict import StateDictMismatchError, expected_state_dict_shapes, load_state_dict
from magnet_jax.weights.tree import CheckpointError, check_model_args

_NESTED_KEYS = ("state_dict", "model_state_dict")
# Distinctive top-level key prefixes of each original model, for hints in error messages.
_KEY_SIGNATURES = (
    ("resnet_backbone.", "fpn"),
    ("feats.", "psp"),
    ("seg_conv.", "refinement"),
    ("cls_head.", "hrnet18+ocr or hrnet48+ocr"),
)


def _import_torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is installed in development
        raise ImportError(
            "reading the original's .pth checkpoints needs PyTorch (pip install torch); "
            "convert them once with `python -m magnet_jax.convert` where it is installed"
        ) from e
    return torch


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The model state dict stored in an original `.pth` file, prefixes stripped, as NumPy arrays.

    Safe: `torch.load(weights_only=True)`. Returns PyTorch-layout arrays keyed like
    the original model's `state_dict()` (no `model.` / `module.` prefix, no `loss.*`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; expected an original PyTorch .pth file")
    torch = _import_torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for foreign files
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint that loads with torch.load(weights_only=True) "
            f"({_first_line(e)}); expected a state dict saved with torch.save"
        ) from None
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path} holds {'an empty mapping' if isinstance(obj, Mapping) else type(obj).__name__}; "
            "expected a state dict (a mapping of parameter names to tensors)"
        )
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a state dict: {len(not_tensors)} entr{'y is' if len(not_tensors) == 1 else 'ies are'} "
            f"not tensors ({', '.join(not_tensors[:10])}{', ...' if len(not_tensors) > 10 else ''})"
        )
    state = {str(k): v for k, v in obj.items()}
    state = _strip_prefix(state, "module.")  # DataParallel around the model or the wrapper
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}  # the wrapper's loss
    state = _strip_prefix(state, "model.")  # the original's training wrapper
    state = _strip_prefix(state, "module.")  # DataParallel inside the wrapper
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
        out[key] = tensor.numpy()
    return out


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _guess_model(keys) -> str | None:
    tops = {k.split(".", 1)[0] + "." for k in keys}
    for prefix, name in _KEY_SIGNATURES:
        if prefix in tops:
            return name
    return None


def load_state_dict_into(
    model: nnx.Module, state: Mapping[str, np.ndarray], *, source: str, model_name: str, num_classes: int
) -> None:
    """`load_state_dict` with error messages that say which model was expected, plus hints."""
    try:
        load_state_dict(model, state, source=f"{source} (read as model {model_name!r}, num_classes={num_classes})")
    except StateDictMismatchError as e:
        given = {k for k in state if not k.endswith("num_batches_tracked")}
        expected = set(expected_state_dict_shapes(model))
        hints = []
        if given == expected:
            hints.append(
                "the keys all match but some shapes differ: was the checkpoint trained with another num_classes?"
            )
        else:
            guess = _guess_model(given)
            if guess is not None and guess != _guess_model(expected):
                hints.append(f"the checkpoint's keys look like model {guess}")
        if hints:
            raise StateDictMismatchError(f"{e}\n  hint: {'; '.join(hints)}") from None
        raise


def load_torch_checkpoint(path: str | Path, model_name: str, num_classes: int) -> nnx.Module:
    """Builds `model_name` for `num_classes` classes from an original `.pth` file, in eval mode.

    Backbones: `model(images [B, H, W, 3] float32, ImageNet-normalised) -> logits
    [B, H, W, num_classes]`. Refinement: `model(fine, coarse)` on probabilities
    `[B, H, W, num_classes]` -> logits. Raises FileNotFoundError, ValueError (unknown
    model / bad num_classes), CheckpointError (not a checkpoint) or
    StateDictMismatchError (missing, unexpected or misshaped keys, all listed).
    """
    path = Path(path)
    check_model_args(model_name, num_classes, str(path))
    state = read_torch_state_dict(path)
    model = build_model(model_name, int(num_classes))
    load_state_dict_into(model, state, source=str(path), model_name=model_name, num_classes=int(num_classes))
    model.eval()
    return model
