"""`python main.py --mode=train`: train refinement modules, a backbone, or the whole synthetic demo.

`config.train.target`:
- `refiner` — refinement module(s) on a frozen backbone (`config.checkpoint.backbone`, else the
  one this workdir trained). `config.train.shared_refiner` true trains one module on a fine
  scale drawn from `scales[1:]` per sample (DeepGlobe, and the original's `train.py`); false
  trains one module per refinement stage, each a separate run whose fine scale is that stage's
  (how the original's per-stage Cityscapes checkpoints were made: one `train.py` run per scale).
  `config.train.stage` restricts that to one stage (1-based); 0 trains them all in turn.
- `backbone` — a segmentation backbone (CE on `out` + aux_weight x CE on `aux`, poly LR).
- `all` — backbone, then refiner(s), then held-out evaluation into `WORKDIR/results.json`
  (coarse only / backbone on the finest patches / MagNet); the synthetic demo.

Workdir layout: `config.json` (resolved config), `checkpoints/RUN/STEP/` (orbax; RUN is
`backbone`, `refiner` or `refiner_stageS`), `weights/RUN/` (final weights, loadable by
`magnet_jax.checkpoints.load_model_weights`), `metrics.jsonl`, `tensorboard/RUN/`.
Rerunning the same command resumes every run from its latest checkpoint and skips finished ones.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

from magnet_jax.config import parse_size, parse_sizes
from magnet_jax.training import logging as tlog
from magnet_jax.training.checkpointing import TrainCheckpointer, check_resume_meta
from magnet_jax.training.mesh import (
    check_batch_size,
    make_mesh,
    maybe_initialize_distributed,
    replicate,
    shard_batch,
)
from magnet_jax.training.optim import make_optimizer
from magnet_jax.training.state import (
    ModelDef,
    TrainState,
    data_to_keys,
    init_train_state,
    keys_to_data,
    split_model,
)


class TrainingDivergedError(FloatingPointError):
    """The loss (or gradient) became NaN / inf; the last good checkpoint is kept."""


# ---------------------------------------------------------------- helpers


def _miou_classes(config) -> list[int] | None:
    text = str(config.data.get("miou_classes", "") or "").strip()
    return [int(t) for t in text.split(",") if t.strip()] or None


def stage_scales(config) -> list[tuple[int, int]]:
    return parse_sizes(config.magnet.scales, "magnet.scales")


def _scales_text(scales: list[tuple[int, int]]) -> str:
    return ",".join(f"{w}-{h}" for w, h in scales)


def refiner_runs(config) -> list[tuple[str, int | None]]:
    """[(run name, stage or None for a shared refiner)] this config trains."""
    n_stages = len(stage_scales(config)) - 1
    if n_stages < 1:
        raise ValueError("config.magnet.scales: refiner training needs at least two scales")
    if config.train.shared_refiner:
        return [("refiner", None)]
    stage = int(config.train.get("stage", 0))
    if stage:
        if not 1 <= stage <= n_stages:
            raise ValueError(f"config.train.stage={stage}: expected 0 (all) or 1..{n_stages}")
        return [(f"refiner_stage{stage}", stage)]
    return [(f"refiner_stage{s}", s) for s in range(1, n_stages + 1)]


def weights_dir(workdir: Path, run: str) -> Path:
    return Path(workdir) / "weights" / run


def _export(model_def: ModelDef, state: TrainState, model_name: str, num_classes: int, path: Path, source: str) -> None:
    from magnet_jax.checkpoints import save_model_weights
    from magnet_jax.training.mesh import to_host

    params, batch_stats = to_host((state.params, state.batch_stats))
    model = model_def.merge(train=False, params=params, batch_stats=batch_stats, rngs=state.rngs)
    if jax.process_index() == 0:
        save_model_weights(model, path, model_name=model_name, num_classes=num_classes, overwrite=True, source=source)


def _frozen_vars(model: nnx.Module, mesh) -> tuple[ModelDef, tuple]:
    model_def, params, batch_stats, rngs = split_model(model)
    return model_def, replicate((params, batch_stats, rngs), mesh)


# ---------------------------------------------------------------- the loop


class _Loop:
    """Runs `step_fn` over a grain loader with checkpoints, logs, validation and NaN checks."""

    def __init__(
        self,
        *,
        run: str,
        workdir: Path,
        config,
        mesh,
        step_fn: Callable,
        state: TrainState,
        loader,
        steps_per_epoch: int,
        total_steps: int,
        meta: dict,
        summarize: Callable[[dict], dict],
        validate: Callable[[TrainState], dict] | None,
        epoch_summary: Callable[[dict], dict] | None = None,
        adapt_batch: Callable[[dict], dict] | None = None,
    ):
        t = config.train
        self.run, self.workdir, self.config, self.mesh = run, workdir, config, mesh
        self.step_fn, self.state, self.loader = step_fn, state, loader
        self.spe, self.total = steps_per_epoch, total_steps
        self.meta, self.summarize, self.validate = meta, summarize, validate
        self.epoch_summary = epoch_summary
        self.adapt_batch = adapt_batch
        self.ckpt = TrainCheckpointer(workdir / "checkpoints" / run, keep=int(t.keep_checkpoints))
        self.logger = tlog.MetricLogger(workdir, run)
        self.log_every = max(int(t.log_every_steps), 1)
        self.ckpt_every = int(t.checkpoint_every_steps)
        self.eval_every = int(t.eval_every_epochs)

    def _resume(self, it) -> int:
        latest = self.ckpt.latest_step()
        if latest is None:
            return 0
        check_resume_meta(self.ckpt.read_meta(latest), self.meta, self.ckpt.directory)
        self.state, _ = self.ckpt.restore(latest, self.state, it)
        logging.info("%s: resumed from step %d (%s)", self.run, latest, self.ckpt.directory)
        return int(latest)

    def _save(self, step: int, it, miou: float | None = None) -> None:
        epoch = step / self.spe
        self.ckpt.save(step, self.state, it, dict(self.meta, epoch=epoch), miou=miou)

    def run_loop(self) -> TrainState:
        it = iter(self.loader)
        start = self._resume(it)
        if start >= self.total:
            logging.info("%s: already trained (%d steps)", self.run, start)
            self.ckpt.close()
            self.logger.close()
            return self.state
        progress = tlog.Progress(self.total, start, self.run, enabled=bool(self.config.train.get("progress", True)))
        epoch_acc: dict[str, Any] = {}
        pending = None  # (step number after update, metrics on device): resolved one step later
        step = start
        last_good = self.ckpt.latest_step()
        t0, n_since = time.time(), 0
        try:
            while step < self.total:
                try:
                    batch = next(it)
                except StopIteration:
                    logging.warning("%s: data ran out at step %d of %d", self.run, step, self.total)
                    break
                if self.adapt_batch is not None:
                    batch = self.adapt_batch(batch)
                batch = shard_batch(batch, self.mesh)
                self.state, metrics = self.step_fn(self.state, batch)
                step += 1
                if pending is not None:
                    self._consume(pending, progress, epoch_acc, last_good)
                pending = (step, metrics)
                n_since += 1
                epoch_end = step % self.spe == 0 or step == self.total
                do_eval = (
                    self.validate is not None
                    and self.eval_every > 0
                    and epoch_end
                    and (math.ceil(step / self.spe) % self.eval_every == 0 or step == self.total)
                )
                do_ckpt = do_eval or step == self.total or (self.ckpt_every > 0 and step % self.ckpt_every == 0)
                if epoch_end or do_ckpt:
                    self._consume(pending, progress, epoch_acc, last_good)
                    pending = None
                if epoch_end:
                    elapsed = time.time() - t0
                    scalars = self._epoch_scalars(epoch_acc)
                    scalars["samples_per_s"] = n_since * int(self.config.train.batch_size) / max(elapsed, 1e-9)
                    self.logger.write(step, "epoch", scalars)
                    epoch_acc.clear()
                    t0, n_since = time.time(), 0
                miou = None
                if do_eval:
                    result = self.validate(self.state)
                    miou = result.get("miou")
                    self.logger.write(step, "eval", result)
                    progress.write(f"{self.run} step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
                if do_ckpt:
                    self._save(step, it, miou)
                    last_good = step
            if pending is not None:
                self._consume(pending, progress, epoch_acc, last_good)
        finally:
            progress.close()
            self.ckpt.close()
            self.logger.flush()
            self.logger.close()
        return self.state

    def _consume(self, pending, progress, epoch_acc, last_good) -> None:
        step, metrics = pending
        host = jax.device_get(metrics)
        loss, gnorm = float(host["loss"]), float(host["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            where = (
                f"the last good checkpoint (step {last_good}) is kept in {self.ckpt.directory}"
                if last_good is not None
                else "no checkpoint had been written yet"
            )
            raise TrainingDivergedError(
                f"{self.run}: the loss became {loss} (gradient norm {gnorm}) at step {step}; training stopped and "
                f"{where}. Lower config.train.lr or check the data."
            )
        for key, value in host.items():
            if key.startswith("conf"):
                epoch_acc[key] = epoch_acc.get(key, 0) + np.asarray(value, np.int64)
        epoch_acc["loss_sum"] = epoch_acc.get("loss_sum", 0.0) + loss
        epoch_acc["n"] = epoch_acc.get("n", 0) + 1
        shown = {"loss": loss, "lr": float(host["lr"])}
        shown.update(self.summarize(host))
        progress.update(1, shown)
        if step % self.log_every == 0 or step == self.total:
            self.logger.write(step, "train", dict(shown, grad_norm=gnorm))

    def _epoch_scalars(self, acc: dict) -> dict:
        out = {"loss": acc.get("loss_sum", 0.0) / max(acc.get("n", 1), 1)}
        if self.epoch_summary is not None:
            out.update(self.epoch_summary(acc))
        return out


# ---------------------------------------------------------------- backbone


def _loader(config, kind: str, per_process_batch: int, workdir: Path, epochs: int | None, seed: int):
    from magnet_jax.data import build_source
    from magnet_jax.data.pipelines import make_train_loader, steps_per_epoch

    source = build_source(config, "train", workdir=str(workdir))
    spe = steps_per_epoch(len(source), per_process_batch, jax.process_count())
    loader = make_train_loader(
        config,
        "train",
        kind,
        batch_size=per_process_batch,
        seed=seed,
        num_epochs=epochs,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        source=source,
        workdir=str(workdir),
    )
    return loader, spe


def _total_steps(config, spe: int) -> int:
    total = int(config.train.epochs) * spe
    if int(config.train.max_steps) > 0:
        total = min(total, int(config.train.max_steps))
    return total


def _backbone_loader(config, per_proc: int, workdir: Path, epochs: int | None, seed: int):
    """(loader, steps per epoch, batch adapter or None) for backbone training."""
    sampling = str(config.train.get("backbone_sampling", "crop"))
    if sampling == "crop":
        loader, spe = _loader(config, "backbone", per_proc, workdir, epochs, seed)
        return loader, spe, None
    if sampling != "scales":
        raise ValueError(f"config.train.backbone_sampling: expected 'crop' or 'scales', got {sampling!r}")
    # MagNet's own views: the whole image resized to a scale of config.magnet.scales (the first one
    # included), then a crop_size crop at a random origin, resized to the input size. Made by the
    # refiner-pair transform with the first scale repeated (its fine scale is drawn from scales[1:]).
    scales = stage_scales(config)
    lconfig = copy.deepcopy(config)
    with lconfig.unlocked() if hasattr(lconfig, "unlocked") else _null():
        lconfig.magnet.scales = _scales_text([scales[0]] + scales)
    loader, spe = _loader(lconfig, "refiner", per_proc, workdir, epochs, seed)

    def adapt(b):
        return {"image": b["fine_image"], "label": b["label"]}

    return loader, spe, adapt


def _precise_bn(config, mesh, model_def: ModelDef, model_inputs, extra, make_loader) -> Callable:
    """`finalize(state) -> state`: precise BatchNorm statistics (`config.train.precise_bn_batches`), or identity."""
    n_batches = int(config.train.get("precise_bn_batches", 0))
    if n_batches <= 0:
        return lambda state: state
    from magnet_jax.training.precise_bn import make_bn_update, recalibrate

    update = make_bn_update(model_def, model_inputs, mesh=mesh)

    def finalize(state: TrainState) -> TrainState:
        loader, adapt = make_loader()  # a fixed, separate stream: the same statistics every time

        def batches():
            for b in loader:
                yield shard_batch(adapt(b) if adapt else b, mesh)

        return recalibrate(update, state, extra, batches(), n_batches)

    return finalize


def train_backbone(config, workdir: Path, mesh) -> Path:
    """Trains `config.model.backbone`; returns the exported weights folder."""
    from magnet_jax.models import build_model
    from magnet_jax.training.backbone_step import make_backbone_step

    run = "backbone"
    out = weights_dir(workdir, run)
    n = int(config.data.num_classes)
    name = str(config.model.backbone)
    per_proc = check_batch_size(int(config.train.batch_size), mesh)
    loader, spe, adapt = _backbone_loader(config, per_proc, workdir, int(config.train.epochs), int(config.seed))
    total = _total_steps(config, spe)
    tx, schedule = make_optimizer(_with_target(config, "backbone"), spe, int(config.train.epochs) * spe)

    model = build_model(name, n, seed=int(config.seed))
    if str(config.train.get("init_backbone", "") or ""):
        from magnet_jax.checkpoints import load_model_weights

        model = load_model_weights(str(config.train.init_backbone), name, n)
    model_def, params, batch_stats, rngs = split_model(model, name)
    state = replicate(init_train_state(params, batch_stats, rngs, tx), mesh)
    step = make_backbone_step(
        model_def,
        tx,
        schedule,
        num_classes=n,
        ignore_label=int(config.data.ignore_label),
        aux_weight=float(config.train.aux_weight),
        mesh=mesh,
        fast_conv=bool(config.train.get("fast_conv", True)),
        loss=str(config.train.get("backbone_loss", "ce")),
        ohem_thresh=float(config.train.ohem_thresh),
        ohem_min_kept=int(config.train.ohem_min_kept),
    )
    classes = _miou_classes(config)
    finalize = _precise_bn(
        config, mesh, model_def, lambda extra, b: (b["image"],), (),
        lambda: _backbone_loader(config, per_proc, workdir, None, int(config.seed) + 7919)[0::2],  # (loader, adapt)
    )

    def summarize(host):
        return {"iou": 100 * tlog.freq_iou(host["conf"], classes)}

    def epoch_summary(acc):
        return {"miou": tlog.mean_iou(acc["conf"], classes)} if "conf" in acc else {}

    validate = None
    if int(config.train.eval_every_epochs) > 0:
        def validate(st):
            return validate_backbone(config, workdir, model_def, finalize(st))

    meta = {"run": run, "model": name, "num_classes": n, "target": "backbone"}
    loop = _Loop(
        run=run, workdir=workdir, config=config, mesh=mesh, step_fn=step, state=state, loader=loader,
        steps_per_epoch=spe, total_steps=total, meta=meta, summarize=summarize, validate=validate,
        epoch_summary=epoch_summary, adapt_batch=adapt,
    )
    state = loop.run_loop()
    _export(model_def, finalize(state), name, n, out, source=f"trained: {workdir / 'checkpoints' / run}")
    return out


def _with_target(config, target: str):
    c = copy.deepcopy(config)
    with c.unlocked() if hasattr(c, "unlocked") else _null():
        c.train.target = target
    return c


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------- refiners


def resolve_backbone_path(config, workdir: Path) -> str:
    given = str(config.checkpoint.backbone or "")
    if given:
        return given
    trained = weights_dir(workdir, "backbone")
    if trained.is_dir():
        return str(trained)
    raise ValueError(
        "refiner training needs a trained backbone: set config.checkpoint.backbone (an original .pth or a "
        f"converted folder), or train one first (--config.train.target=backbone) into {workdir}"
    )


def load_backbone(config, workdir: Path) -> nnx.Module:
    from magnet_jax.checkpoints import load_model_weights

    path = resolve_backbone_path(config, workdir)
    return load_model_weights(path, str(config.model.backbone), int(config.data.num_classes))


def train_refiners(config, workdir: Path, mesh) -> list[Path]:
    """Trains the refinement module(s) this config asks for; returns their weights folders."""
    backbone = load_backbone(config, workdir)
    bb_def, frozen = _frozen_vars(backbone, mesh)
    outs = []
    for run, stage in refiner_runs(config):
        outs.append(_train_one_refiner(config, workdir, mesh, run, stage, bb_def, frozen))
    return outs


def _stage_config(config, stage: int | None):
    """The config a refiner run sees: for a per-stage run the fine scale is that stage's only."""
    if stage is None:
        return config
    scales = stage_scales(config)
    c = copy.deepcopy(config)
    with c.unlocked() if hasattr(c, "unlocked") else _null():
        c.magnet.scales = _scales_text([scales[0], scales[stage]])
    return c


def _train_one_refiner(config, workdir: Path, mesh, run: str, stage: int | None, bb_def, frozen) -> Path:
    from magnet_jax.models import build_model
    from magnet_jax.training.refiner_step import make_refiner_step

    out = weights_dir(workdir, run)
    n = int(config.data.num_classes)
    sconfig = _stage_config(config, stage)
    per_proc = check_batch_size(int(config.train.batch_size), mesh)
    loader, spe = _loader(sconfig, "refiner", per_proc, workdir, int(config.train.epochs), int(config.seed))
    total = _total_steps(config, spe)
    tx, schedule = make_optimizer(_with_target(config, "refiner"), spe, int(config.train.epochs) * spe)
    in_w, in_h = parse_size(config.magnet.input_size, "magnet.input_size")

    seed = int(config.seed) + (stage or 0)
    model = build_model("refinement", n, seed=seed)
    ref_def, params, batch_stats, rngs = split_model(model, "refinement")
    state = replicate(init_train_state(params, batch_stats, rngs, tx), mesh)
    jstep = make_refiner_step(
        bb_def,
        ref_def,
        tx,
        schedule,
        num_classes=n,
        ignore_label=int(config.data.ignore_label),
        input_hw=(in_h, in_w),
        input_order=str(config.train.refiner_input_order),
        ohem_thresh=float(config.train.ohem_thresh),
        ohem_min_kept=int(config.train.ohem_min_kept),
        loss=str(config.train.get("refiner_loss", "ohem")),
        mesh=mesh,
        fast_conv=bool(config.train.get("fast_conv", True)),
    )

    def step_fn(st, batch):
        return jstep(st, frozen, batch)

    def model_inputs(extra, batch):
        from magnet_jax.training.refiner_step import refiner_inputs

        fine, crop = refiner_inputs(bb_def, extra, batch, (in_h, in_w))
        return (fine, crop) if str(config.train.refiner_input_order) == "fine_first" else (crop, fine)

    finalize = _precise_bn(
        config, mesh, ref_def, model_inputs, frozen,
        lambda: (_loader(sconfig, "refiner", per_proc, workdir, None, int(config.seed) + 7919)[0], None),
    )

    classes = _miou_classes(config)

    def summarize(host):
        return {
            "coarse": 100 * tlog.freq_iou(host["conf_coarse"], classes),
            "fine": 100 * tlog.freq_iou(host["conf_fine"], classes),
            "aggre": 100 * tlog.freq_iou(host["conf_aggre"], classes),
        }

    def epoch_summary(acc):
        return {
            f"miou_{k}": tlog.mean_iou(acc[f"conf_{k}"], classes)
            for k in ("coarse", "fine", "aggre")
            if f"conf_{k}" in acc
        }

    validate = None
    if int(config.train.eval_every_epochs) > 0:
        def validate(st):
            return validate_refiner(config, workdir, run, stage, ref_def, finalize(st))

    meta = {
        "run": run,
        "model": "refinement",
        "num_classes": n,
        "target": "refiner",
        "stage": stage,
        "backbone": str(config.model.backbone),
        "input_order": str(config.train.refiner_input_order),
    }
    loop = _Loop(
        run=run, workdir=workdir, config=config, mesh=mesh, step_fn=step_fn, state=state, loader=loader,
        steps_per_epoch=spe, total_steps=total, meta=meta, summarize=summarize, validate=validate,
        epoch_summary=epoch_summary,
    )
    state = loop.run_loop()
    _export(ref_def, finalize(state), "refinement", n, out, source=f"trained: {workdir / 'checkpoints' / run}")
    return out


# ---------------------------------------------------------------- validation hooks


def validate_backbone(config, workdir: Path, model_def: ModelDef, state: TrainState) -> dict:
    """Coarse (stage-0) mIoU of the backbone on `config.data` val images."""
    from magnet_jax.training import evaluation

    return evaluation.validate_backbone(config, workdir, _host_model(model_def, state))


def validate_refiner(config, workdir: Path, run: str, stage: int | None, ref_def: ModelDef, state: TrainState) -> dict:
    """MagNet mIoU on val images with this refiner (stages up to `stage`; earlier stages' trained refiners)."""
    from magnet_jax.training import evaluation

    return evaluation.validate_refiner(config, workdir, stage, _host_model(ref_def, state))


def _host_model(model_def: ModelDef, state: TrainState) -> nnx.Module:
    """The trained module in eval mode on this process's default device (for the single-image predictor)."""
    from magnet_jax.training.mesh import to_host

    params, batch_stats = to_host((state.params, state.batch_stats))
    rngs = data_to_keys(to_host(keys_to_data(state.rngs)), state.rngs)
    return model_def.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)


# ---------------------------------------------------------------- entry point


def run_train(config, workdir: str) -> dict | None:
    """`main.py --mode=train`. Returns the results dict for target `all`, else None."""
    from magnet_jax.inference.engine import enable_compilation_cache

    tlog.quiet_orbax_logs()
    maybe_initialize_distributed()
    enable_compilation_cache()  # a rerun (resume) reuses the compiled steps ($MAGNET_JAX_CACHE_DIR=off disables)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    tlog.save_resolved_config(config, workdir)
    mesh = make_mesh()
    logging.info(
        "training on %d device(s) (%s), %d process(es)", mesh.devices.size, jax.default_backend(), jax.process_count()
    )
    target = str(config.train.target)
    t0 = time.time()
    if target == "backbone":
        train_backbone(config, workdir, mesh)
        return None
    if target == "refiner":
        train_refiners(config, workdir, mesh)
        return None
    if target == "all":
        from magnet_jax.training import evaluation

        if not str(config.checkpoint.backbone or ""):
            bconfig = _backbone_phase_config(config)
            train_backbone(bconfig, workdir, mesh)
        t_bb = time.time() - t0
        train_refiners(config, workdir, mesh)
        t_ref = time.time() - t0 - t_bb
        results = evaluation.evaluate_all(config, workdir)
        total = round(time.time() - t0, 1)
        results["wall_s"] = {"backbone": round(t_bb, 1), "refiners": round(t_ref, 1), "total": total}
        if jax.process_index() == 0:
            path = workdir / "results.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(results, indent=2) + "\n")
            tmp.replace(path)
            print(evaluation.format_results(results), flush=True)
        return results
    raise ValueError(f"config.train.target: expected 'refiner', 'backbone' or 'all', got {target!r}")


def _backbone_phase_config(config):
    """For target `all`: config.train overridden by config.train.backbone_phase.* (its own epochs, lr, ...)."""
    c = copy.deepcopy(config)
    phase = config.train.get("backbone_phase", None)
    with c.unlocked() if hasattr(c, "unlocked") else _null():
        c.train.target = "backbone"
        if phase is not None:
            for key, value in phase.items():
                c.train[key] = value
    return c
