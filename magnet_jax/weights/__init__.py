"""Model weights on disk: converted orbax folders and the original's `.pth` files, loaded strictly.

- `weights.orbax_io`: weights checkpoint folders (`save_model_weights`, `read_weights_metadata`, ...).
- `weights.torch_io`: the original's `.pth` files (`torch.load(weights_only=True)`, strict key mapping).
- `weights.load`: `load_model_weights` (either format) and `load_refiners` (one per refinement stage).
- `weights.tree`: model variables <-> nested dicts of arrays; `CheckpointError`.

The converter CLI is `python -m magnet_jax.convert`.
"""

from magnet_jax.models.state_dict import StateDictMismatchError
from magnet_jax.weights.load import load_model_weights, load_refiners, parse_checkpoint_list
from magnet_jax.weights.orbax_io import (
    WEIGHTS_FORMAT,
    WEIGHTS_FORMAT_VERSION,
    is_weights_checkpoint,
    load_weights_checkpoint,
    read_weights_metadata,
    save_model_weights,
)
from magnet_jax.weights.torch_io import load_state_dict_into, load_torch_checkpoint, read_torch_state_dict
from magnet_jax.weights.tree import CheckpointError, assign_weights_tree, check_model_args, weights_tree

__all__ = [
    "WEIGHTS_FORMAT",
    "WEIGHTS_FORMAT_VERSION",
    "CheckpointError",
    "StateDictMismatchError",
    "assign_weights_tree",
    "check_model_args",
    "is_weights_checkpoint",
    "load_model_weights",
    "load_refiners",
    "load_state_dict_into",
    "load_torch_checkpoint",
    "load_weights_checkpoint",
    "parse_checkpoint_list",
    "read_torch_state_dict",
    "read_weights_metadata",
    "save_model_weights",
    "weights_tree",
]
