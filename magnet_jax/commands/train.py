"""`main.py --mode=train`: config -> run specs, loaders and validators -> the trainers.

`config.train.target`:
- `backbone`: a segmentation backbone (`WORKDIR/weights/backbone`);
- `refiner`: refinement module(s) on a frozen backbone (`config.checkpoint.backbone`, else the one this
  workdir trained): one shared by every stage (`train.shared_refiner`, DeepGlobe and the original's
  `train.py`), or one per stage, each trained on the pairs (coarse scale, its own scale)
  (`WORKDIR/weights/refiner_stageS`; `train.stage` restricts it to one);
- `all`: backbone (its own `train.backbone_phase.*` settings), refiner(s), then the three-way held-out
  evaluation (`train_all`): the synthetic main job.
Workdir: `config.json`, `checkpoints/RUN/STEP/` (orbax), `weights/RUN/`, `metrics.jsonl`, `tensorboard/RUN/`.
Rerunning the same command resumes every run from its latest checkpoint and skips finished ones.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from absl import logging
from flax import nnx

from magnet_jax.allocator import release_heap
from magnet_jax.commands.evaluate import evaluate_to_workdir
from magnet_jax.inference.plan import plan_from_config
from magnet_jax.sharding import check_batch_size, make_mesh, maybe_initialize_distributed
from magnet_jax.training import spec as specs
from magnet_jax.training.backbone import train_backbone
from magnet_jax.training.common import LoaderFactory, weights_dir
from magnet_jax.training.refiner import train_refiner
from magnet_jax.training.validation import Validator


def loader_factory(config, run: specs.RunSpec, workdir: Path, mesh) -> LoaderFactory:
    """`make(epochs, seed) -> (loader, steps per epoch, adapter)` of a run's training batches (this process's shard)."""
    from magnet_jax.data import build_source
    from magnet_jax.data.pipelines import make_train_loader, steps_per_epoch

    per_proc = check_batch_size(run.loop.batch_size, mesh)
    source = build_source(config, "train", workdir=str(workdir))
    spe = steps_per_epoch(len(source), per_proc, jax.process_count())
    # Backbone "scales" sampling: MagNet's own views (the image resized to one of the scales, a crop_size
    # crop, resized to the input), made by the refiner-pair transform whose fine view is that crop.
    pairs = run.kind == "refiner" or run.sampling == "scales"
    adapt = (lambda b: {"image": b["fine_image"], "label": b["label"]}) if run.kind == "backbone" and pairs else None

    def make(epochs: int | None, seed: int):
        loader = make_train_loader(
            config, "train", "refiner" if pairs else "backbone", batch_size=per_proc, seed=seed, num_epochs=epochs,
            shard_index=jax.process_index(), shard_count=jax.process_count(), source=source,
            workdir=str(workdir), scales=run.data_scales if pairs else None,
        )  # fmt: skip
        return loader, spe, adapt

    return make


def _validator(config, workdir: Path, run: specs.RunSpec, dataset, backbone: nnx.Module | None):
    """The run's Validator on the val split, or None (`eval_every_epochs` 0, or earlier stages not trained)."""
    if run.loop.eval_every_epochs <= 0:
        return None
    from magnet_jax.data import build_source

    plan = plan_from_config(config)
    source = build_source(config, "val", workdir=str(workdir))
    from magnet_jax.inference.tiled import StreamOptions

    stream = StreamOptions.from_config(config, after_tile=release_heap)  # freed tile buffers: back to the OS
    common = dict(max_images=run.loop.eval_max_images, stream=stream)
    if run.kind == "backbone":
        return Validator(plan.truncated(0), dataset, source, role="backbone", **common)
    if run.stage is None:
        return Validator(plan, dataset, source, role="refiner", backbone=backbone, shared=True, **common)
    earlier = []
    for s in range(1, run.stage):
        path = weights_dir(workdir, f"refiner_stage{s}")
        if not path.is_dir():
            logging.info("%s: no validation (the refiner of stage %d is not trained in %s)", run.name, s, workdir)
            return None
        earlier.append(_load(path, run.model, run.num_classes))
    return Validator(plan.truncated(run.stage), dataset, source, role="refiner", backbone=backbone,
                     earlier_refiners=earlier, **common)  # fmt: skip


def _load(path, name: str, num_classes: int) -> nnx.Module:
    from magnet_jax.weights import load_model_weights

    return load_model_weights(str(path), name, num_classes)


def backbone_source(config, workdir: Path) -> str:
    """The frozen backbone of refiner training / evaluation: `config.checkpoint.backbone`, else this workdir's."""
    given = str(config.checkpoint.backbone or "").strip()
    if given:
        return given
    trained = weights_dir(workdir, "backbone")
    if trained.is_dir():
        return str(trained)
    raise ValueError(
        "config.checkpoint.backbone is empty and this workdir has no trained backbone: give an original .pth or a "
        f"converted folder, or train one first (--config.train.target=backbone) into {workdir}"
    )


def train_backbone_from_config(config, workdir: Path, mesh, dataset, *, phase: bool = False) -> Path:
    run = specs.backbone_run(config, dataset.miou_classes, phase_overrides=phase)
    return train_backbone(run, workdir, mesh, loader_factory(config, run, workdir, mesh),
                          _validator(config, workdir, run, dataset, None))  # fmt: skip


def train_refiners_from_config(config, workdir: Path, mesh, dataset) -> list[Path]:
    backbone = _load(backbone_source(config, workdir), str(config.model.backbone), int(config.data.num_classes))
    outs = []
    for run in specs.refiner_runs(config, dataset.miou_classes):
        validator = _validator(config, workdir, run, dataset, backbone)
        outs.append(train_refiner(run, workdir, mesh, backbone, loader_factory(config, run, workdir, mesh), validator))
    return outs


def planned_runs(config, miou_classes: tuple[int, ...]) -> list[specs.RunSpec]:
    """The runs this command trains, in order (target `all` without a given backbone starts with one)."""
    target = str(config.train.target)
    runs = []
    if target == "backbone" or (target == "all" and not str(config.checkpoint.backbone or "").strip()):
        runs.append(specs.backbone_run(config, miou_classes, phase_overrides=target == "all"))
    if target in ("refiner", "all"):
        runs.extend(specs.refiner_runs(config, miou_classes))
    return runs


def preflight(config, workdir: Path) -> None:
    """Before any work: every run with checkpoints in `workdir` must have been written with this run's
    identity (ResumeError listing each difference `old -> new`)."""
    from magnet_jax.data import dataset_spec
    from magnet_jax.training.checkpointing import ResumeError, describe_differences, latest_meta, resume_differences
    from magnet_jax.training.common import checkpoints_dir

    for run in planned_runs(config, dataset_spec(config).miou_classes):
        found = latest_meta(checkpoints_dir(workdir, run.name))
        if found is None:
            continue
        step, meta = found
        diffs = resume_differences(meta, run.identity())
        if diffs:
            raise ResumeError(
                f"--workdir {workdir}: run {run.name!r} has checkpoints (step {step}) written with other settings "
                f"({describe_differences(diffs)}); nothing was changed. Use another --workdir, or rerun with the "
                "recorded values (config.json)"
            )


def open_sources(config, workdir: Path) -> None:
    """Opens every split the planned runs read (train; val when a run validates; the eval split for target
    `all`): lists, every listed file and the first sample of each, so missing data fails before any record."""
    from magnet_jax.data import build_source, dataset_spec

    runs = planned_runs(config, dataset_spec(config).miou_classes)
    splits = ["train"] if runs else []
    splits += ["val"] if any(r.loop.eval_every_epochs > 0 for r in runs) else []
    splits += [str(config.data.eval_split)] if str(config.train.target) == "all" else []
    for split in dict.fromkeys(splits):
        build_source(config, split, workdir=str(workdir))


def stopped_early(config, workdir: Path, miou_classes: tuple[int, ...]) -> dict[str, dict]:
    """`{run: {"step", "epochs_done", "epochs"}}` of the planned runs whose latest checkpoint is short of their
    epochs (stopped by `config.train.max_steps`)."""
    from magnet_jax.training.checkpointing import latest_meta
    from magnet_jax.training.common import checkpoints_dir

    out = {}
    for run in planned_runs(config, miou_classes):
        found = latest_meta(checkpoints_dir(workdir, run.name))
        if found is not None and float(found[1].get("epoch", run.loop.epochs)) < run.loop.epochs:
            out[run.name] = {"step": found[0], "epochs_done": found[1]["epoch"], "epochs": run.loop.epochs}
    return out


def run_train(config, workdir: str | Path) -> dict | None:
    """`main.py --mode=train`. Every check runs before any file is written: the config, the workdir (writable;
    its recorded config, if any, must agree: `commands/workdir.py`), the checkpoints of every planned run,
    and the data of every split it reads (`open_sources`). Only then is `WORKDIR/config.json` written (a refused
    run records nothing) and the runs train. Returns the results dict for target `all`."""
    from magnet_jax.commands.checks import check_config
    from magnet_jax.commands.workdir import check_record, prepare_workdir, write_record
    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.data import dataset_spec
    from magnet_jax.training import logging as tlog

    maybe_initialize_distributed()  # several processes (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI): join first
    check_config(config, "train")
    workdir = prepare_workdir(workdir, utf8_only=True)
    check_record(config, workdir)
    preflight(config, workdir)
    open_sources(config, workdir)  # the last check: the record names only a config that could run
    if jax.process_index() == 0:
        write_record(config, workdir, "train")
    tlog.quiet_orbax_logs()
    enable_compilation_cache()  # a rerun (resume) reuses the compiled steps
    mesh = make_mesh()
    logging.info("training on %d device(s) (%s), %d process(es)", mesh.devices.size, jax.default_backend(),
                 jax.process_count())  # fmt: skip
    dataset = dataset_spec(config)
    target = str(config.train.target)
    if target == "backbone":
        train_backbone_from_config(config, workdir, mesh, dataset)
        return None
    if target == "refiner":
        train_refiners_from_config(config, workdir, mesh, dataset)
        return None
    return train_all(config, workdir, mesh, dataset)


def trained_refiner_paths(config, workdir: Path) -> list[str]:
    """`config.checkpoint.refiners` if given, else the refiner folder(s) this workdir's training wrote."""
    from magnet_jax.weights import parse_checkpoint_list

    given = parse_checkpoint_list(str(config.checkpoint.refiners or ""))
    if given:
        return given
    if config.train.shared_refiner:
        return [str(weights_dir(workdir, "refiner"))]
    n_stages = len(str(config.magnet.scales).split(",")) - 1
    return [str(weights_dir(workdir, f"refiner_stage{s}")) for s in range(1, n_stages + 1)]


def train_all(config, workdir: Path, mesh, dataset) -> dict:
    """Target `all` (the synthetic main job): trains what is missing (the backbone with its own
    `train.backbone_phase.*` settings, then the refiner(s)), then evaluates `config.data.eval_split` with
    the coarse / patch / MagNet views into `WORKDIR/results.json` (pictures in `WORKDIR/pictures/`)."""
    t0 = time.time()
    if not str(config.checkpoint.backbone or "").strip():
        train_backbone_from_config(config, workdir, mesh, dataset, phase=True)
    t_bb = time.time() - t0
    train_refiners_from_config(config, workdir, mesh, dataset)
    t_ref = time.time() - t0 - t_bb
    results = evaluate_to_workdir(
        config, workdir, backbone=backbone_source(config, workdir), refiners=trained_refiner_paths(config, workdir),
        patch_view=True, write=False,
    )  # fmt: skip
    results["wall_s"] = {"backbone": round(t_bb, 1), "refiners": round(t_ref, 1),
                         "total": round(time.time() - t0, 1)}  # fmt: skip
    stopped = stopped_early(config, workdir, dataset.miou_classes)
    if stopped:  # results of models cut short by config.train.max_steps: never taken for the real ones
        results["partial"] = True
        results["stopped_early"] = stopped
    if jax.process_index() == 0:
        from magnet_jax.evaluation import format_results, write_json_atomic

        write_json_atomic(workdir / "results.json", results)
        print(format_results(results), flush=True)
        if stopped:
            runs = ", ".join(f"{k} at epoch {v['epochs_done']:g} of {v['epochs']}" for k, v in stopped.items())
            print(f"results.json is marked partial: training stopped early by config.train.max_steps ({runs}); "
                  "rerun without it to finish training", flush=True)  # fmt: skip
    return results
