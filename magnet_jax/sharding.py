"""Device mesh, shardings and multi-host set-up (training and inference).

One `jax.sharding.Mesh` over every device of every process with a single `data`
axis: batches are split along their first dimension, parameters / optimizer state
are replicated. Under `jax.jit` the model's BatchNorm then normalises with the
statistics of the *global* batch (synchronised BatchNorm), so one config gives the
same numbers on 1 CPU, 8 GPUs or several hosts.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"

_distributed_done = False


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when a multi-process launch is detected.

    Detected: `JAX_COORDINATOR_ADDRESS` (with `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`),
    SLURM with more than one task, or Open MPI with more than one rank. Returns
    whether JAX runs distributed. Safe to call more than once.
    """
    global _distributed_done
    if _distributed_done:
        return jax.process_count() > 1
    kwargs: dict[str, Any] = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        if os.environ.get("JAX_NUM_PROCESSES"):
            kwargs["num_processes"] = _env_int("JAX_NUM_PROCESSES")
        if os.environ.get("JAX_PROCESS_ID"):
            kwargs["process_id"] = _env_int("JAX_PROCESS_ID")
        launch = True
    else:
        launch = _env_int("SLURM_NTASKS") > 1 or _env_int("OMPI_COMM_WORLD_SIZE") > 1
    if launch:
        jax.distributed.initialize(**kwargs)
        logging.info(
            "jax.distributed: process %d of %d, %d local / %d global devices",
            jax.process_index(),
            jax.process_count(),
            jax.local_device_count(),
            jax.device_count(),
        )
    _distributed_done = True
    return jax.process_count() > 1


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh `("data",)` over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Batch sharding: first dimension split over the `data` axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, scalars)."""
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, *, field: str = "train.batch_size") -> int:
    """Per-process batch size; a clear error when the global batch does not split evenly."""
    n_dev = mesh.devices.size
    if global_batch % n_dev:
        raise ValueError(
            f"config.{field}={global_batch} is not divisible by the {n_dev} devices of the mesh; "
            f"use a multiple of {n_dev} (the batch is split evenly over all devices)"
        )
    n_proc = jax.process_count()
    if global_batch % n_proc:
        raise ValueError(f"config.{field}={global_batch} is not divisible by the {n_proc} processes")
    return global_batch // n_proc


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Process-local NumPy batch (pytree, leading dim = local batch) -> global sharded jax.Arrays."""
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of (identical on every process) arrays replicated on the mesh.

    Typed PRNG key arrays are placed through their raw key data.
    """
    sharding = replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Replicated (or fully addressable) jax.Arrays -> NumPy on this process."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(get, tree)
