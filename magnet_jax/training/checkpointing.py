"""Training checkpoints: orbax `CheckpointManager` in `WORKDIR/checkpoints/RUN`.

Each step folder `RUN/STEP/` holds three items and, for validated steps, the manager's metrics:
- `state`: the `TrainState` (parameters, BatchNorm statistics, dropout RNG streams as
  raw key data, optimizer state, step) via `StandardSave`;
- `data`: the data iterator's position (grain's orbax handler, one file per process);
- `meta`: JSON describing what is trained (model, classes, target, stage, epoch, ...);
- `metrics/metrics`: JSON `{"miou": ...}`, the validation mIoU that picks the best checkpoint
  (written by the `CheckpointManager` when `save` gets `miou`; absent in steps not validated).
A plain orbax manager restores `state` and `meta` when given those item names
(docs/training_and_checkpoints.md); `data` needs grain's handler.

Kept: the last `keep` checkpoints plus the best by validation mIoU (checkpoints saved
with `metrics={"miou": ...}`). Orbax writes every checkpoint into a temporary folder
and renames it when complete, so a crash (even SIGKILL) never leaves a half-written
step folder; leftovers of an interrupted save are removed on the next start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as ocm

from magnet_jax.training.state import TrainState, data_to_keys, keys_to_data

STATE, DATA, META = "state", "data", "meta"
BEST_METRIC = "miou"


class ResumeError(ValueError):
    """A checkpoint in the workdir does not belong to this training configuration."""


def _is_grain_iterator(it: Any) -> bool:
    try:
        from grain._src.python import data_loader
        from grain._src.python.dataset import dataset
    except ImportError:  # pragma: no cover
        return False
    return isinstance(it, (data_loader.DataLoaderIterator, dataset.DatasetIterator))


class TrainCheckpointer:
    """Saves / restores `TrainState` + data iterator + metadata for one training run."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self.keep = max(int(keep), 1)
        policy = ocm.AnyPreservationPolicy(
            [
                ocm.LatestN(n=self.keep),
                ocm.BestN(
                    get_metric_fn=lambda m: float(m[BEST_METRIC]),
                    reverse=False,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                ),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=1,
            best_fn=lambda m: float(m[BEST_METRIC]),
            best_mode="max",
            preservation_policy=policy,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=(STATE, DATA, META), options=options)

    # ------------------------------------------------------------ queries
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        steps = [s for s in self.manager.all_steps() if self.metrics(s) is not None]
        return self.manager.best_step() if steps else None

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def metrics(self, step: int) -> dict | None:
        try:
            return self.manager.metrics(step)
        except Exception:  # noqa: BLE001 - missing metrics file
            return None

    def read_meta(self, step: int) -> dict:
        return _read_meta(self.directory / str(step))

    def set_aside(self, step: int) -> Path:
        """Moves the unreadable checkpoint `step` to `DIRECTORY.unreadable/STEP` (kept for inspection, out of
        the way of the step saved again later); returns where it went."""
        import shutil

        target = self.directory.with_name(f"{self.directory.name}.unreadable") / str(step)
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        (self.directory / str(step)).rename(target)
        self.manager.reload()
        return target

    # ------------------------------------------------------------ save / restore
    def save(
        self,
        step: int,
        state: TrainState,
        data_iterator: Any,
        meta: dict,
        *,
        miou: float | None = None,
    ) -> None:
        """Writes checkpoint `step` (asynchronously for the arrays; atomic either way)."""
        items = {
            STATE: ocp.args.StandardSave(keys_to_data(state)),
            DATA: self._data_save_args(data_iterator),
            META: ocp.args.JsonSave(dict(meta, step=int(step))),
        }
        metrics = {BEST_METRIC: float(miou)} if miou is not None else None
        self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def restore(self, step: int, like: TrainState, data_iterator: Any) -> tuple[TrainState, dict]:
        """Restores checkpoint `step` into the structure / shardings of `like`; sets the iterator in place."""
        stored_like = keys_to_data(like)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), stored_like
        )
        items = {
            STATE: ocp.args.StandardRestore(abstract),
            DATA: self._data_restore_args(data_iterator),
            META: ocp.args.JsonRestore(),
        }
        restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        if not _is_grain_iterator(data_iterator) and data_iterator is not None:
            payload = restored[DATA]
            state = payload["state"]
            data_iterator.set_state(state.encode() if payload.get("bytes") else state)
        state = data_to_keys(restored[STATE], like)
        return state, dict(restored[META] or {})

    def _data_save_args(self, it: Any):
        if it is not None and _is_grain_iterator(it):
            import grain.checkpoint

            return grain.checkpoint.CheckpointSave(it)
        state = it.get_state() if it is not None else None
        if isinstance(state, bytes):
            return ocp.args.JsonSave({"bytes": True, "state": state.decode()})
        return ocp.args.JsonSave({"bytes": False, "state": state})

    def _data_restore_args(self, it: Any):
        if it is not None and _is_grain_iterator(it):
            import grain.checkpoint

            return grain.checkpoint.CheckpointRestore(it)
        return ocp.args.JsonRestore()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def resume_differences(meta: dict, expected: dict) -> list[tuple[str, object, object]]:
    """`[(field, recorded, new), ...]` for every field of `expected` that the checkpoint's `meta` records
    with another value (fields an older checkpoint does not record are not compared)."""
    return [(k, meta[k], v) for k, v in expected.items() if k in meta and meta[k] != v]


def describe_differences(diffs: list[tuple[str, object, object]]) -> str:
    """`"train.lr: 0.01 -> 0.02; ..."`, run fields named by the config field they come from."""
    from magnet_jax.training.spec import CONFIG_FIELDS

    return "; ".join(f"{CONFIG_FIELDS.get(k, k)}: {old!r} -> {new!r}" for k, old, new in diffs)


def check_resume_meta(meta: dict, expected: dict, directory: Path) -> None:
    """Refuses to resume from a checkpoint written for another run identity, listing every difference."""
    diffs = resume_differences(meta, expected)
    if diffs:
        raise ResumeError(
            f"cannot resume from {directory}: its checkpoints were written with other settings ("
            + describe_differences(diffs)
            + "). Use another --workdir to start over, or rerun with the recorded values"
        )
    logging.info("resuming from %s step %s", directory, meta.get("step"))


def latest_meta(directory: str | Path) -> tuple[int, dict] | None:
    """(step, meta) of the latest committed checkpoint in `directory`, read without opening a manager
    (orbax commits a step by renaming its temporary folder to the bare step number), or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())
    if not steps:
        return None
    return steps[-1], _read_meta(directory / str(steps[-1]))


def _read_meta(step_dir: Path) -> dict:
    """A checkpoint's `meta` item, {} when it is missing or unreadable (the restore then says what is wrong)."""
    try:
        meta = json.loads((step_dir / META / "metadata").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def set_aside_if_changed(directory: str | Path, key: str, value: str) -> Path | None:
    """When the latest checkpoint in `directory` records `meta[key]` different from `value` (a refiner's
    frozen backbone trained further since), its checkpoints cannot continue to the model an uninterrupted
    run gives: the folder is moved to `DIRECTORY.before_KEY_VALUE` (kept, not deleted) and the run starts
    again. Returns the new place, or None when nothing was moved."""
    directory = Path(directory)
    found = latest_meta(directory)
    if found is None or key not in found[1] or found[1][key] == value:
        return None
    target = directory.with_name(f"{directory.name}.before_{key}_{value}")
    if target.exists():
        import shutil

        shutil.rmtree(target)  # an older set-aside of this same run, superseded
    directory.rename(target)
    return target
