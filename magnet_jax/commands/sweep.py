"""`main.py --mode=sweep`: one evaluation per point of an ablation, on the same images and weights.

    python main.py --config configs/sweeps/synthetic.py --mode=sweep --workdir runs/sweep \
        --config.checkpoint.backbone=runs/synthetic/weights/backbone \
        --config.checkpoint.refiners=runs/synthetic/weights/refiner

A sweep config file is an ordinary config file (`get_config(arg)`: the base config, which
`--mode=evaluate` on the same file evaluates) plus `get_sweep(arg)`: a list of points, each a dict of
overrides with dotted field names, e.g. `{"magnet.n_points": 0.5}`, and an optional `"name"`
(default: the overrides, `n_points=0.5`; `{}` is the base config, named `base`). Command-line
overrides apply to the base and so to every point.

Every point is applied and checked (`check_config`) before any work: an unknown field or a point that
contradicts itself is refused naming the point and the field. Points may not change the data
(`data.*`, `eval.max_images`): all points see the same images. Weights are loaded once per path;
points whose plan is the same share one compiled predictor. Each point appends one line to
`WORKDIR/sweep.jsonl` (the results schema of `evaluation/results.py` plus `name`, `overrides`);
rerunning the same command skips the points already written (a line written with another base
config is refused). At the end `sweep.md` (the table) and `sweep.png` (the plots) are written.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import jax

from magnet_jax.allocator import release_heap
from magnet_jax.commands.workdir import flat_config

FIXED_PREFIXES = ("data.", "eval.max_images", "seed")


class SweepError(ValueError):
    """A sweep config or point that cannot be run (named in the message)."""


def load_sweep(config_path: str, arg: str | None) -> list[dict]:
    """`get_sweep(arg)` of the config file at `config_path`; SweepError if it has none or it is malformed."""
    spec = importlib.util.spec_from_file_location("magnet_jax_sweep_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"--config {config_path}: a sweep config defines get_sweep(arg) returning the points")
    points = module.get_sweep(arg) if arg else module.get_sweep()
    if not isinstance(points, (list, tuple)) or not points or not all(isinstance(p, dict) for p in points):
        raise SweepError(f"--config {config_path}: get_sweep() must return a non-empty list of override dicts")
    return [dict(p) for p in points]


def point_name(point: dict) -> str:
    if "name" in point:
        return str(point["name"])
    items = [f"{k.split('.')[-1]}={v}" for k, v in point.items()]
    return ",".join(items) or "base"


def apply_point(base, point: dict, name: str):
    """A copy of `base` with the point's overrides; SweepError naming the point and the field."""
    from magnet_jax.commands.checks import check_config

    config = copy.deepcopy(base)
    for key, value in point.items():
        if key == "name":
            continue
        if key.startswith(FIXED_PREFIXES):
            raise SweepError(f"sweep point {name!r}: {key} is fixed for a sweep (every point sees the same images)")
        parts, node = key.split("."), config
        for part in parts[:-1]:
            if part not in node:
                raise SweepError(f"sweep point {name!r}: unknown field config.{key}")
            node = node[part]
        if parts[-1] not in node:
            raise SweepError(f"sweep point {name!r}: unknown field config.{key}")
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise SweepError(f"sweep point {name!r}: config.{key}={value!r}: {e}") from None
    try:
        check_config(config, "evaluate")
    except ValueError as e:
        raise SweepError(f"sweep point {name!r}: {e}") from None
    return config


def _base_hash(base) -> str:
    text = json.dumps(flat_config(base), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _complete_rows(path: Path) -> list[dict]:
    """The rows of `sweep.jsonl`. A last line cut short (a run killed mid-write: no newline at its end) is
    dropped from the file with a note, so that its point runs again; a bad line anywhere else is a SweepError."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and "name" in row:
            rows.append(row)
            if i == len(lines):  # whole but unterminated: end it, so that the next row starts its own line
                with open(path, "ab") as f:
                    f.write(b"\n")
            continue
        if i == len(lines):  # the unfinished last line
            keep = len(data) - len(line)
            with open(path, "r+b") as f:
                f.truncate(keep)
            print(f"note: {path}: its last line was cut short (a run stopped while writing it); dropped, that "
                  "point runs again", file=sys.stderr, flush=True)  # fmt: skip
            break
        raise SweepError(f"{path}: line {i} is not a sweep result; move the file away, or use another --workdir")
    return rows


def _done(path: Path, base_hash: str) -> dict[str, dict]:
    if not path.is_file():
        return {}
    done = {}
    for row in _complete_rows(path):
        if row.get("base_config") != base_hash:
            raise SweepError(
                f"--workdir: {path} was written by a sweep with another base config; use another --workdir"
            )
        done[row["name"]] = row
    return done


class _Models:
    """Weights loaded once per path, predictors shared by points with the same plan."""

    def __init__(self, base):
        self.base, self._weights, self._predictors = base, {}, {}

    def _load(self, path: str, name: str, n: int):
        from magnet_jax.weights import load_model_weights

        key = (path, name, n)
        if key not in self._weights:
            self._weights[key] = load_model_weights(path, name, n)
        return self._weights[key]

    def predictor(self, config):
        from magnet_jax.inference.plan import plan_from_config
        from magnet_jax.inference.predictor import MagNetPredictor
        from magnet_jax.inference.tiled import StreamOptions
        from magnet_jax.weights import parse_checkpoint_list

        plan = plan_from_config(config)
        n = int(config.data.num_classes)
        refiner_paths = parse_checkpoint_list(str(config.checkpoint.refiners)) if plan.stages else []
        if plan.stages and len(refiner_paths) > 1:
            refiner_paths = refiner_paths[: plan.num_refiners_expected]
        stream = StreamOptions.from_config(config, after_tile=release_heap)
        key = (repr(plan), repr(stream), str(config.checkpoint.backbone), tuple(refiner_paths))  # every plan field
        if key not in self._predictors:
            backbone = self._load(str(config.checkpoint.backbone), str(config.model.backbone), n)
            refiners = [self._load(p, str(config.model.refiner), n) for p in refiner_paths]
            self._predictors[key] = MagNetPredictor(plan, backbone, refiners, stream=stream)
        return self._predictors[key]


def run_sweep(config, workdir: str | Path, *, config_path: str | None = None, arg: str | None = None) -> list[dict]:
    """Runs every point not yet in `WORKDIR/sweep.jsonl`; writes the table and plots; returns all rows."""
    from absl import flags
    from ml_collections import config_flags

    from magnet_jax.commands.evaluate import evaluate_to_workdir
    from magnet_jax.evaluation.processes import ProcessGroup
    from magnet_jax.evaluation.sweep_report import write_report
    from magnet_jax.sharding import maybe_initialize_distributed

    if config_path is None:
        config_path = config_flags.get_config_filename(flags.FLAGS["config"])
        config_path, _, arg = config_path.partition(":")
        arg = arg or None
    workdir = Path(workdir)
    points = load_sweep(config_path, arg)
    names = [point_name(p) for p in points]
    if len(set(names)) != len(names):
        raise SweepError(f"--config {config_path}: two sweep points share a name ({', '.join(names)})")
    configs = [apply_point(config, p, n) for p, n in zip(points, names, strict=True)]  # all checked first
    for c, name in zip(configs, names, strict=True):
        if not str(c.checkpoint.backbone or "").strip():
            raise SweepError(f"sweep point {name!r}: config.checkpoint.backbone is empty: give the trained weights")
    maybe_initialize_distributed()  # several processes: each evaluates its share of every point's images
    ProcessGroup(float(config.eval.process_timeout_s)).check_same_run(flat_config(config), workdir)
    writer = jax.process_index() == 0
    out = workdir / "sweep.jsonl"
    base_hash = _base_hash(config)
    done = _done(out, base_hash)
    models = _Models(config)
    rows: list[dict[str, Any]] = []
    for point, name, c in zip(points, names, configs, strict=True):
        overrides = {k: v for k, v in point.items() if k != "name"}
        if name in done:
            if done[name].get("overrides") != json.loads(json.dumps(overrides)):
                raise SweepError(f"{out}: point {name!r} was written with other overrides; use another --workdir")
            print(f"sweep point {name}: already in {out}, skipped", flush=True)
            rows.append(done[name])
            continue
        print(f"sweep point {name} ({len(rows) + 1}/{len(points)})", flush=True)
        res = evaluate_to_workdir(c, workdir, predictor=models.predictor(c), write=False, pictures=False)
        row = {"name": name, "overrides": overrides, "base_config": base_hash, **res}
        print(f"  MagNet mIoU {100 * res['miou']['refined']:.2f} (coarse {100 * res['miou']['coarse']:.2f}), "
              f"{res['compute']['gflops']:.1f} GFLOP, {res['seconds_per_image']:.3f} s/image", flush=True)
        row.pop("confusion", None)
        if writer:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
        rows.append(row)
    if writer:
        write_report(rows, workdir)
    print(f"sweep: {len(rows)} points -> {out}, {workdir / 'sweep.md'}, {workdir / 'sweep.png'}", flush=True)
    return rows
