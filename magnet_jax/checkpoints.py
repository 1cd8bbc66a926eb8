"""Model weight files: converted orbax checkpoints, and one loader for every kind.

A *weights checkpoint* is a folder written atomically by orbax holding one model's
variables (NNX `Param` and `BatchStat`, NHWC / HWIO layouts) plus a JSON record of
what they are::

    OUT_DIR/
      meta/metadata     JSON: {"format": "magnet-jax-weights", "version": 1,
                               "model": "fpn", "num_classes": 7, "source": ...}
      state/            orbax PyTree (StandardCheckpointHandler): nested dict of
                        arrays keyed by the module's attribute path
      _CHECKPOINT_METADATA, commit_success.txt   (orbax bookkeeping)

`python -m magnet_jax.convert` writes them from the original's `.pth` files;
`save_model_weights` writes them from a live model. `load_model_weights(path,
model_name, num_classes)` accepts either an original `.pth` file (converted on the
fly, needs PyTorch) or such a folder, and is strict both ways: a different model
or class count, and any missing, unexpected or misshaped array, is an error that
names the file and what was expected.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.models import MODEL_NAMES, build_model
from magnet_jax.models.state_dict import StateDictMismatchError

WEIGHTS_FORMAT = "magnet-jax-weights"
WEIGHTS_FORMAT_VERSION = 1
META_ITEM = "meta"
STATE_ITEM = "state"
_META_FILE = Path(META_ITEM) / "metadata"  # where orbax's JsonCheckpointHandler puts it


class CheckpointError(ValueError):
    """A checkpoint file or folder cannot be used; the message names it and what was expected."""


# ---------------------------------------------------------------- model state <-> tree


def _weight_filter():
    return nnx.Any(nnx.Param, nnx.BatchStat)


def _flat_variables(model: nnx.Module) -> dict[tuple[str, ...], Any]:
    """(path parts as strings) -> array, for every Param and BatchStat of `model`."""
    state = nnx.state(model, _weight_filter())
    out = {}
    for path, value in nnx.to_flat_state(state):
        value = value.get_value() if isinstance(value, nnx.Variable) else value
        out[tuple(str(p) for p in path)] = value
    return out


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def weights_tree(model: nnx.Module) -> dict[str, Any]:
    """The model's weights as a nested dict with string keys (what a weights checkpoint stores)."""
    return _nest(_flat_variables(model))


def _flatten_tree(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten_tree(value, (*prefix, str(key))))
        return out
    return {prefix: tree}


def _mismatch_error(
    source: str,
    expected: dict[tuple[str, ...], tuple[int, ...]],
    given: dict[tuple[str, ...], tuple[int, ...]],
    what: str,
) -> StateDictMismatchError | None:
    missing = sorted(".".join(k) for k in set(expected) - set(given))
    unexpected = sorted(".".join(k) for k in set(given) - set(expected))
    misshaped = [
        f"{'.'.join(k)}: checkpoint {tuple(given[k])}, model {tuple(expected[k])}"
        for k in sorted(set(expected) & set(given))
        if tuple(given[k]) != tuple(expected[k])
    ]
    if not (missing or unexpected or misshaped):
        return None
    lines = [f"{source} does not fit {what} ({len(expected)} arrays expected):"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
        if items:
            shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
            lines.append(f"  {len(items)} {title} array(s): " + ", ".join(shown))
    return StateDictMismatchError("\n".join(lines))


def assign_weights_tree(model: nnx.Module, tree: dict[str, Any], *, source: str = "weights") -> None:
    """Copies a nested dict of arrays (as `weights_tree` returns) into `model` in place, strictly.

    Raises `StateDictMismatchError` naming `source` and every missing, unexpected and
    misshaped array; on error the model is left untouched.
    """
    current = _flat_variables(model)
    given = _flatten_tree(tree)
    error = _mismatch_error(
        source,
        {k: tuple(np.shape(v)) for k, v in current.items()},
        {k: tuple(np.shape(v)) for k, v in given.items()},
        "the model",
    )
    if error is not None:
        raise error
    state = nnx.state(model, _weight_filter())
    pure = _nest({k: jnp.asarray(v, dtype=current[k].dtype) for k, v in given.items()})
    nnx.replace_by_pure_dict(state, pure)  # maps the string keys back to integer list indices
    nnx.update(model, state)


# ---------------------------------------------------------------- orbax plumbing


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
    error = _mismatch_error(
        f"model to save as {out}",
        expected,
        {k: tuple(np.shape(v)) for k, v in _flat_variables(model).items()},
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
    return {k: tuple(v.shape) for k, v in _flat_variables(abstract).items()}


def check_model_args(model_name: str, num_classes: int, source: str) -> None:
    if model_name not in MODEL_NAMES:
        raise ValueError(f"{source}: unknown model {model_name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"{source}: num_classes must be a positive integer, got {num_classes!r}")


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
    current = _flat_variables(model)
    with _checkpointer() as ckptr:
        try:
            stored = ckptr.metadata(path).item_metadata[STATE_ITEM].tree
        except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged folders
            raise CheckpointError(f"{path}: cannot read the stored array metadata ({type(e).__name__}: {e})") from None
        stored_shapes = {k: tuple(v.shape) for k, v in _flatten_tree(stored).items()}
        error = _mismatch_error(
            str(path),
            {k: tuple(v.shape) for k, v in current.items()},
            stored_shapes,
            f"model {model_name!r} with num_classes={num_classes}",
        )
        if error is not None:
            raise error
        target = _nest({k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in current.items()})
        try:
            args = ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(target)})
            restored = ckptr.restore(path, args=args)[STATE_ITEM]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: restoring the arrays failed ({type(e).__name__}: {e})") from None
    assign_weights_tree(model, restored, source=str(path))
    model.eval()
    return model


# ---------------------------------------------------------------- one entry point


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
    from magnet_jax.convert import load_torch_checkpoint  # imports torch lazily

    return load_torch_checkpoint(p, model_name, num_classes)


def parse_checkpoint_list(text: str | Sequence[str]) -> list[str]:
    """'P1,P2' (or a list) -> ['P1', 'P2'], blanks dropped."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return [str(t).strip() for t in items if str(t).strip()]


def load_refiners(paths: str | Sequence[str], num_classes: int, num_stages: int) -> list[nnx.Module]:
    """One refinement module per stage from `--config.checkpoint.refiners` ('P' shared, or 'P1,...,Pm').

    A single path gives one module shared by every stage (the same object repeated).
    """
    items = parse_checkpoint_list(paths)
    if not items:
        raise ValueError("no refinement checkpoint given (config.checkpoint.refiners is empty)")
    if len(items) == 1:
        return [load_model_weights(items[0], "refinement", num_classes)] * num_stages
    if len(items) != num_stages:
        raise ValueError(
            f"config.checkpoint.refiners lists {len(items)} checkpoints ({', '.join(items)}); "
            f"expected 1 (shared) or {num_stages} (one per refinement stage)"
        )
    return [load_model_weights(p, "refinement", num_classes) for p in items]
