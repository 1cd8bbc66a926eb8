"""One step of the real training path, in process: `run_train` (what `main.py --mode=train` calls) on the
synthetic smoke config made tiny (64 px images, batch 2, one step), for a backbone and for a refiner.

Each asserts what a user relies on: a finite loss that moved the parameters, a checkpoint at step 1 with its
three items, and exported weights that reload into the model the checkpoint holds (identical logits).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from magnet_jax.commands.train import run_train
from magnet_jax.config import load_config_file
from magnet_jax.data import dataset_spec
from magnet_jax.models import build_model
from magnet_jax.training import spec as specs
from magnet_jax.training.checkpointing import STATE, TrainCheckpointer, latest_meta
from magnet_jax.training.optim import make_optimizer
from magnet_jax.training.state import ModelDef, TrainState, data_to_keys, init_train_state, keys_to_data, split_model
from magnet_jax.training.tasks import BackboneTask, RefinerTask
from magnet_jax.weights import load_model_weights, save_model_weights

REPO = Path(__file__).resolve().parents[1]


def _tiny_config(target: str, backbone: str = ""):
    """The smoke config at its smallest: 64 px images, 2 training images in batches of 2 (one step), no
    validation and no precise BN (so the exported weights are the state of step 1)."""
    config = load_config_file(REPO / "configs" / "synthetic.py", "smoke")
    config.data.synthetic.size = 64
    config.data.synthetic.num_train = 2
    config.magnet.scales = "32-32,64-64"
    config.magnet.input_size = config.magnet.crop_size = "32-32"
    config.train.target = target
    config.train.epochs = 1
    config.train.batch_size = 2
    config.train.lr_milestones = ""
    config.train.eval_every_epochs = 0
    config.train.precise_bn_batches = 0
    config.train.checkpoint_every_steps = 1
    config.train.progress = False
    config.checkpoint.backbone = backbone
    return config


def _rows(workdir: Path, run: str) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["run"] == run and r["kind"] == "train"]


def _checkpoint_model(workdir: Path, run: specs.RunSpec, model_def: ModelDef, initial: TrainState):
    """(the model held by checkpoint step 1 of `run` in eval mode, its TrainState): the `state` item only."""
    ckpt = TrainCheckpointer(workdir / "checkpoints" / run.name)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), keys_to_data(initial))
    restored = ckpt.manager.restore(1, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract)}))
    ckpt.close()
    state = data_to_keys(restored[STATE], initial)
    return model_def.merge(state, train=False), state


def _check_run(workdir: Path, run: specs.RunSpec, initial, inputs: tuple) -> None:
    rows = _rows(workdir, run.name)
    assert [r["step"] for r in rows] == [1]
    assert math.isfinite(rows[0]["loss"]) and rows[0]["loss"] > 0
    assert math.isfinite(rows[0]["grad_norm"]) and rows[0]["grad_norm"] > 0
    step_dir = workdir / "checkpoints" / run.name / "1"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == ["data", "meta", "state"]
    step, meta = latest_meta(workdir / "checkpoints" / run.name)
    assert step == 1 and meta["epoch"] == 1.0 and meta["step"] == 1
    assert {k: meta[k] for k in run.identity()} == run.identity()  # what a resume is checked against
    model_def, params0, batch_stats0, rngs0 = split_model(initial, run.model)
    tx, _ = make_optimizer(run.optim, 1, 1)
    trained, state = _checkpoint_model(workdir, run, model_def, init_train_state(params0, batch_stats0, rngs0, tx))
    assert int(state.step) == 1
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(jax.tree.leaves(params0), jax.tree.leaves(state.params), strict=True))  # fmt: skip
    assert moved > 0, "one step left every parameter where it started"
    exported = load_model_weights(str(workdir / "weights" / run.name), run.model, run.num_classes)
    np.testing.assert_array_equal(np.asarray(exported(*inputs)), np.asarray(trained(*inputs)))


def test_one_backbone_step(tmp_path):
    config = _tiny_config("backbone")
    run_train(config, tmp_path)
    run = specs.backbone_run(config, dataset_spec(config).miou_classes)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    _check_run(tmp_path, run, BackboneTask().init_model(run), (images,))


def test_one_refiner_step(tmp_path):
    config = _tiny_config("refiner", backbone=str(tmp_path / "backbone"))
    n = int(config.data.num_classes)
    backbone = build_model(str(config.model.backbone), n, seed=3)
    save_model_weights(backbone, tmp_path / "backbone", model_name=str(config.model.backbone), num_classes=n)
    work = tmp_path / "work"
    run_train(config, work)
    (run,) = specs.refiner_runs(config, dataset_spec(config).miou_classes)
    assert run.name == "refiner"
    _, meta = latest_meta(work / "checkpoints" / "refiner")
    assert meta["frozen_backbone"] == RefinerTask(backbone).digest  # the backbone it was trained on
    probs = jax.nn.softmax(np.random.default_rng(1).normal(size=(2, 2, 32, 32, n)).astype(np.float32), -1)
    _check_run(work, run, RefinerTask(backbone).init_model(run), (probs[0], probs[1]))
