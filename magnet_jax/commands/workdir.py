"""A workdir's identity: `WORKDIR/config.json` records the config that produced it.

- The workdir is checked first: creatable, a folder, writable (errors name `--workdir`).
- A `config.json` that magnet-jax did not write (no `_magnet_jax` record key) is never overwritten:
  training there is refused.
- Training into a workdir that already holds a record compares the new config field by field with
  it: a field that changes what is computed (data, model, MagNet plan, seed) refuses with every
  difference listed `old -> new`. The training fields and the frozen backbone are compared per run by
  the checkpoints (`training/spec.py: RunSpec.identity`), so one workdir can train a backbone, then
  its refiners with their own epochs and learning rate. Fields that cannot change results
  (`FREE_FIELDS`) may differ.
- The record is written only after every check passed, atomically (a kill mid-write keeps the old one).
- One run at a time: `lock_workdir` holds an fcntl lock on `WORKDIR/.magnet_jax.lock` until the process
  exits; a second run into the same workdir is refused, naming the holder's pid.
Evaluation and prediction never write `config.json`; their outputs embed the config they used.
`--mode=evaluate` is refused in a workdir holding a training record (its `results.json` and `pictures/`
are the training's): an evaluation gets its own `--workdir` (a subfolder of the training's is fine).
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

from magnet_jax.evaluation import write_json_atomic

RECORD_KEY = "_magnet_jax"
# Compared per run by the checkpoints, or not affecting results at all (predict.*: extra output files).
FREE_PREFIXES = ("train.", "eval.", "predict.")
FREE_FIELDS = ("data.num_workers", "magnet.patch_batch_size", "magnet.tile_patches", "magnet.memory_budget_mb",
               "checkpoint.backbone", "checkpoint.refiners")  # fmt: skip
# Fields added after records were first written: a record without one was produced with this value.
ADDED_FIELDS = {"magnet.conv_algorithm": "direct", "magnet.input_pyramid": False}
LOCK_FILE = ".magnet_jax.lock"
_HELD: dict[Path, Any] = {}  # workdir -> its open lock file, for the life of the process


class WorkdirError(ValueError):
    """The workdir cannot be used for this run (named in the message)."""


def flat_config(config) -> dict[str, Any]:
    """`{"data.name": ..., "magnet.scales": ..., ...}` of a ConfigDict (or a nested dict)."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value

    walk(tree, "")
    return out


def prepare_workdir(path: str | os.PathLike, *, utf8_only: bool = False) -> Path:
    """Creates the workdir if needed and checks that it is a writable folder; WorkdirError naming `--workdir`.
    `utf8_only` (training): a name that is not valid UTF-8 is refused first (orbax checkpoints cannot use it)."""
    workdir = Path(path).absolute()
    if utf8_only:
        try:
            os.fsencode(workdir).decode("utf-8")
        except UnicodeDecodeError:
            from magnet_jax.preprocess import shown_path

            raise WorkdirError(f"--workdir {shown_path(path)}: training needs a folder name that is valid UTF-8 "
                               "(checkpoints cannot be written under it); use another --workdir") from None  # fmt: skip
    if workdir.exists() and not workdir.is_dir():
        raise WorkdirError(f"--workdir {path}: exists and is not a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"--workdir {path}: cannot create it ({e.strerror or e})") from None
    probe = workdir / f".write_test_{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise WorkdirError(f"--workdir {path}: not writable ({e.strerror or e})") from None
    return workdir


def read_record(workdir: Path) -> dict | None:
    """The recorded config (flat) of `workdir`, None if there is none; WorkdirError if `config.json` is not ours."""
    path = workdir / "config.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or RECORD_KEY not in data:
        raise WorkdirError(
            f"--workdir {workdir}: it holds a config.json that magnet-jax did not write; it was left untouched. "
            "Use another --workdir"
        )
    return flat_config({k: v for k, v in data.items() if k != RECORD_KEY})


def _free(field: str) -> bool:
    return field in FREE_FIELDS or field.startswith(FREE_PREFIXES)


def differences(recorded: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`["field: old -> new", ...]` over the fields that change what a workdir's runs compute."""
    out = []
    for key in sorted(set(recorded) | set(new)):
        if _free(key):
            continue
        old, cur = recorded.get(key, ADDED_FIELDS.get(key, "<absent>")), new.get(key, "<absent>")
        if old != cur:
            out.append(f"{key}: {old!r} -> {cur!r}")
    return out


def check_record(config, workdir: Path) -> None:
    """Refuses (WorkdirError listing the fields) a config that contradicts this workdir's record."""
    recorded = read_record(workdir)
    if recorded is None:
        return
    diffs = differences(recorded, flat_config(config))
    if diffs:
        raise WorkdirError(
            f"--workdir {workdir} was produced with another config ({'; '.join(diffs)}); nothing was changed. "
            "Use another --workdir, or rerun with the recorded values (its config.json)"
        )


def write_record(config, workdir: Path, mode: str) -> Path:
    """Writes `config.json` (the config as used, plus the `_magnet_jax` record key), atomically."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    data = json.loads(json.dumps(data, default=str))
    data[RECORD_KEY] = {"record": 1, "mode": mode, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return write_json_atomic(workdir / "config.json", data)


def check_evaluation_workdir(workdir: Path) -> None:
    """Refuses (WorkdirError) to evaluate into a workdir whose `config.json` records a training run."""
    try:
        data = json.loads((workdir / "config.json").read_text())
    except (OSError, ValueError):
        return  # no record (or not ours: evaluation never writes config.json)
    record = data.get(RECORD_KEY) if isinstance(data, dict) else None
    if isinstance(record, dict) and record.get("mode") == "train":
        raise WorkdirError(
            f"--workdir {workdir} holds a training run (config.json): --mode=evaluate would replace its results.json "
            f"and pictures/; nothing was changed. Evaluate into another --workdir, e.g. {workdir / 'eval'}"
        )


def _launch_rank() -> int:
    """This process's rank in a multi-process launch (0 when launched alone): only rank 0 locks the workdir."""
    for var in ("JAX_PROCESS_ID", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        raw = os.environ.get(var, "").strip()
        if raw.isdigit():
            return int(raw)
    return 0


def _holder_pid(f) -> int | None:
    """The pid holding the fcntl lock on the open file `f` (F_GETLK), None if unknown."""
    try:
        lock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)  # struct flock
        pid = struct.unpack("hhqqi4x", fcntl.fcntl(f, fcntl.F_GETLK, lock))[4]
        return pid or None
    except (OSError, struct.error):
        return None


def lock_workdir(workdir: Path) -> None:
    """Holds an exclusive lock on `WORKDIR/.magnet_jax.lock` until this process exits (the kernel releases it
    even after a kill); WorkdirError naming the workdir and the holder's pid when another run holds it."""
    workdir = Path(workdir)
    if workdir in _HELD or _launch_rank() != 0:
        return
    # POSIX record lock (lockf), so that F_GETLK names the holder and the file stays empty; this process
    # must never open and close the lock file elsewhere (closing any of its descriptors releases the lock).
    f = open(workdir / LOCK_FILE, "a")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = _holder_pid(f)
        f.close()
        who = f"pid {pid}" if pid else "another process"
        raise WorkdirError(f"--workdir {workdir}: in use by another run ({who}); wait for it to finish, or use "
                           "another --workdir") from None  # fmt: skip
    _HELD[workdir] = f
