"""Converted weights checkpoints: orbax folders holding one model's variables plus a JSON record.

A *weights checkpoint* is a folder written atomically by orbax::

    OUT_DIR/
      meta/metadata     JSON: {"format": "magnet-jax-weights", "version": 1,
                               "model": "fpn", "num_classes": 7, "source": ...}
      state/            orbax PyTree (StandardCheckpointHandler): nested dict of
                        arrays keyed by the module's attribute path (`weights.tree`)
      _CHECKPOINT_METADATA, commit_success.txt   (orbax bookkeeping)

`python -m magnet_jax.convert` writes them from the original's `.pth` files;
`save_model_weights` writes them from a live model. Loading is strict: a different
model or class count, and any missing, unexpected or misshaped array, is an error
that names the folder and what was expected.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from magnet_jax.models import build_model
from magnet_jax.weights.tree import (
    CheckpointError,
    assign_weights_tree,
    check_model_args,
    flat_variables,
    flatten_tree,
    mismatch_error,
    nest,
    weights_tree,
)

WEIGHTS_FORMAT = "magnet-jax-weights"
WEIGHTS_FORMAT_VERSION = 1
META_ITEM = "meta"
STATE_ITEM = "state"
_META_FILE = Path(META_ITEM) / "metadata"  # where orbax's JsonCheckpointHandler puts it


def _checkpointer():
    import orbax.checkpoint as ocp

    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    state_handler = ocp.StandardCheckpointHandler()
    json_handler = ocp.JsonCheckpointHandler()
    registry.add(STATE_ITEM, ocp.args.StandardSave, state_handler)
    registry.add(STATE_ITEM, ocp.args.StandardRestore, state_handler)
    registry.add(META_ITEM, ocp.args.JsonSave, json_handler)
    registry.add(META_ITEM, ocp.args.JsonRestore, json_handler)
    # Weight folders hold host NumPy arrays written and read by one process: in a multi-process run
    # orbax must not wait for the other processes (they never call this for the same folder).
    me = jax.process_index()
    local = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    return ocp.Checkpointer(
        ocp.CompositeCheckpointHandler(
            handler_registry=registry, composite_options=ocp.CompositeOptions(multiprocessing_options=local)
        ),
        multiprocessing_options=local,
    )


def is_weights_checkpoint(path: str | Path) -> bool:
    """True when `path` is a folder written by `save_model_weights` (or the converter CLI)."""
    path = Path(path)
    return path.is_dir() and (path / _META_FILE).is_file() and (path / STATE_ITEM).is_dir()


def read_weights_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON record of a weights checkpoint (`model`, `num_classes`, `source`, ...)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights checkpoint {path} does not exist")
    if not is_weights_checkpoint(path):
        raise CheckpointError(
            f"{path} is not a magnet-jax weights checkpoint: expected a folder with {_META_FILE} and "
            f"{STATE_ITEM}/ (written by `python -m magnet_jax.convert` or save_model_weights), "
            "or an original .pth file"
        )
    try:
        meta = json.loads((path / _META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / _META_FILE}: unreadable metadata JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path / _META_FILE}: expected a JSON object with format {WEIGHTS_FORMAT!r}")
    if meta.get("version", 0) > WEIGHTS_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: weights format version {meta.get('version')} is newer than this code "
            f"understands ({WEIGHTS_FORMAT_VERSION})"
        )
    return meta


def save_model_weights(
    model: nnx.Module,
    out_dir: str | Path,
    *,
    model_name: str,
    num_classes: int,
    overwrite: bool = False,
    source: str = "",
) -> Path:
    """Writes `model`'s weights as a weights checkpoint folder `out_dir`; returns its absolute path.

    `model_name` / `num_classes` are recorded (and checked against the model's shapes).
    The write is atomic: orbax writes into a temporary folder and renames it; an
    existing `out_dir` is refused unless `overwrite`, and even then only an earlier
    weights checkpoint or an empty folder is replaced (swapped in by rename).
    """
    out = Path(out_dir).absolute()
    _check_overwrite(out, overwrite)
    expected = _expected_shapes(model_name, num_classes, source=str(out))
    error = mismatch_error(
        f"model to save as {out}",
        expected,
        {k: tuple(np.shape(v)) for k, v in flat_variables(model).items()},
        f"model {model_name!r} with num_classes={num_classes}",
    )
    if error is not None:
        raise error
    meta = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_FORMAT_VERSION,
        "model": model_name,
        "num_classes": int(num_classes),
        "source": str(source),
        "layout": "flax nnx Param+BatchStat, NHWC activations, HWIO conv kernels",
    }
    import orbax.checkpoint as ocp

    tree = jax.tree.map(lambda v: np.asarray(v), weights_tree(model))
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    staging = out.parent / f".{out.name}.saving-{tag}"
    try:
        with _checkpointer() as ckptr:
            ckptr.save(
                staging,
                args=ocp.args.Composite(
                    **{STATE_ITEM: ocp.args.StandardSave(tree), META_ITEM: ocp.args.JsonSave(meta)}
                ),
            )
        if out.exists():
            _check_overwrite(out, overwrite)
            old = out.parent / f".{out.name}.old-{tag}"
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_overwrite(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{out} already exists; refusing to replace it (pass --overwrite / overwrite=True)")
    if out.is_dir() and (is_weights_checkpoint(out) or not any(out.iterdir())):
        return
    raise CheckpointError(
        f"refusing to overwrite {out}: it is not a magnet-jax weights checkpoint (or an empty folder)"
    )


def _expected_shapes(model_name: str, num_classes: int, *, source: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    check_model_args(model_name, num_classes, source)
    abstract = nnx.eval_shape(lambda: build_model(model_name, num_classes))
    return {k: tuple(v.shape) for k, v in flat_variables(abstract).items()}


def load_weights_checkpoint(path: str | Path, model_name: str, num_classes: int) -> nnx.Module:
    """Builds `model_name` for `num_classes` and fills it from a weights checkpoint folder (eval mode)."""
    path = Path(path).absolute()
    check_model_args(model_name, num_classes, str(path))
    meta = read_weights_metadata(path)
    if meta.get("model") != model_name or meta.get("num_classes") != num_classes:
        raise CheckpointError(
            f"{path} holds weights of model {meta.get('model')!r} with num_classes={meta.get('num_classes')}; "
            f"expected model {model_name!r} with num_classes={num_classes}"
        )
    import orbax.checkpoint as ocp

    model = build_model(model_name, int(num_classes))
    current = flat_variables(model)
    with _checkpointer() as ckptr:
        try:
            stored = ckptr.metadata(path).item_metadata[STATE_ITEM].tree
        except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged folders
            raise CheckpointError(f"{path}: cannot read the stored array metadata ({type(e).__name__}: {e})") from None
        stored_shapes = {k: tuple(v.shape) for k, v in flatten_tree(stored).items()}
        error = mismatch_error(
            str(path),
            {k: tuple(v.shape) for k, v in current.items()},
            stored_shapes,
            f"model {model_name!r} with num_classes={num_classes}",
        )
        if error is not None:
            raise error
        target = nest({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in current.items()})
        try:
            args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)})
            restored = ckptr.restore(path, args=args)[STATE_ITEM]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: restoring the arrays failed ({type(e).__name__}: {e})") from None
    assign_weights_tree(model, restored, source=str(path))
    model.eval()
    return model
