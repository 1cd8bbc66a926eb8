"""One loader for every weights format, and the per-stage refiner list of `config.checkpoint.refiners`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flax import nnx

from magnet_jax.models import REFINER, check_model_name
from magnet_jax.weights.orbax_io import load_weights_checkpoint
from magnet_jax.weights.torch_io import load_torch_checkpoint


def load_model_weights(path: str | Path, model_name: str, num_classes: int) -> nnx.Module:
    """`model_name` for `num_classes` classes with weights from `path`, in eval mode.

    `path` is either an original PyTorch `.pth` file (a backbone's training-wrapper state
    dict or a refiner's plain state dict; converted in memory, needs PyTorch) or a weights
    checkpoint folder written by `python -m magnet_jax.convert` / `save_model_weights`.
    Raises FileNotFoundError, CheckpointError or StateDictMismatchError (both ValueError),
    each naming the file and what was expected.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"checkpoint {p} does not exist (expected an original .pth file or a converted weights folder "
            f"for model {model_name!r} with num_classes={num_classes})"
        )
    if p.is_dir():
        return load_weights_checkpoint(p, model_name, num_classes)
    return load_torch_checkpoint(p, model_name, num_classes)


def parse_checkpoint_list(text: str | Sequence[str]) -> list[str]:
    """'P1,P2' (or a list) -> ['P1', 'P2'], blanks dropped."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return [str(t).strip() for t in items if str(t).strip()]


def load_refiners(paths: str | Sequence[str], num_classes: int, num_stages: int, *, refiner: str) -> list[nnx.Module]:
    """One `refiner` module per stage from `config.checkpoint.refiners` ('P' shared, or 'P1,...,Pm').

    `refiner` is the registered refiner name (`config.model.refiner`). A single path gives one
    module shared by every stage (the same object repeated).
    """
    check_model_name(refiner, REFINER, "config.model.refiner")
    items = parse_checkpoint_list(paths)
    if not items:
        raise ValueError("no refinement checkpoint given (config.checkpoint.refiners is empty)")
    if len(items) == 1:
        return [load_model_weights(items[0], refiner, num_classes)] * num_stages
    if len(items) != num_stages:
        raise ValueError(
            f"config.checkpoint.refiners lists {len(items)} checkpoints ({', '.join(items)}); "
            f"expected 1 (shared) or {num_stages} (one per refinement stage)"
        )
    return [load_model_weights(p, refiner, num_classes) for p in items]
