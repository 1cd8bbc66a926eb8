"""Where a run's files go in the workdir, and its trained model: a host copy in eval mode and the exported
weights folder."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx

from magnet_jax.sharding import to_host
from magnet_jax.training.spec import RunSpec
from magnet_jax.training.state import ModelDef, TrainState, data_to_keys, keys_to_data


def weights_dir(workdir: str | Path, run: str) -> Path:
    """`WORKDIR/weights/RUN`: the final weights of a run (a converted-weights folder)."""
    return Path(workdir) / "weights" / run


def checkpoints_dir(workdir: str | Path, run: str) -> Path:
    """`WORKDIR/checkpoints/RUN`: the run's orbax checkpoints (`STEP/` folders)."""
    return Path(workdir) / "checkpoints" / run


def host_model(model_def: ModelDef, state: TrainState) -> nnx.Module:
    """The trained module in eval mode on this process's default device."""
    params, batch_stats = to_host((state.params, state.batch_stats))
    rngs = data_to_keys(to_host(keys_to_data(state.rngs)), state.rngs)
    return model_def.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)


def export(model_def: ModelDef, state: TrainState, spec: RunSpec, path: Path, source: str) -> Path:
    """Saves the run's final weights (process 0 writes; every process returns the path)."""
    from magnet_jax.weights import save_model_weights

    model = host_model(model_def, state)
    if jax.process_index() == 0:
        save_model_weights(model, path, model_name=spec.model, num_classes=spec.num_classes, overwrite=True,
                           source=source)  # fmt: skip
    return path
