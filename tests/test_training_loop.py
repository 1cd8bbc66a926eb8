"""The training loop: NaN stops with a clear message and keeps the last good checkpoint; retention of
the last N + the best by validation mIoU; the mesh refuses a batch that does not split over devices."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from magnet_jax.config import default_config
from magnet_jax.sharding import check_batch_size, make_mesh
from magnet_jax.training.checkpointing import TrainCheckpointer
from magnet_jax.training.loop import TrainingDivergedError, TrainLoop
from magnet_jax.training.state import TrainState


class _ListIterator:
    def __init__(self, values):
        self.values, self.pos = values, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= len(self.values):
            raise StopIteration
        self.pos += 1
        return {"x": np.full((2, 1), self.values[self.pos - 1], np.float32)}

    def get_state(self):
        return {"pos": self.pos}

    def set_state(self, state):
        self.pos = int(state["pos"])


class _Loader:
    def __init__(self, values):
        self.values = values

    def __iter__(self):
        return _ListIterator(self.values)


def _state():
    params = nnx.State({"w": jnp.ones((3,), jnp.float32)})
    tx = optax.sgd(0.1)
    return TrainState(jnp.zeros((), jnp.int32), params, nnx.State({}), nnx.State({}), tx.init(params)), tx


def _make_step(tx):
    @jax.jit
    def step(state, batch):
        def loss_fn(p):
            return jnp.sum(p["w"] ** 2) * jnp.mean(batch["x"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt = tx.update(grads, state.opt_state, state.params)
        new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt)
        return new, {"loss": loss, "lr": jnp.float32(0.1), "grad_norm": optax.global_norm(grads)}

    return step


def _config(**train):
    """The loop settings of a toy run (`training.spec.LoopSpec`), read from config.train as the commands do."""
    from magnet_jax.training.spec import backbone_run

    c = default_config()
    c.train.batch_size = 2
    c.train.progress = False
    for k, v in train.items():
        c.train[k] = v
    return backbone_run(c, ()).loop


def _loop(tmp_path: Path, values, config, validate=None, spe=2):
    state, tx = _state()
    return TrainLoop(
        run="toy", workdir=tmp_path, loop=config, mesh=make_mesh(jax.devices()[:1]), step_fn=_make_step(tx),
        state=state, loader=_Loader(values), steps_per_epoch=spe, total_steps=len(values), meta={"run": "toy"},
        summarize=lambda host: {}, validate=validate,
    )


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    values = [1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0, 1.0]
    loop = _loop(tmp_path, values, _config(checkpoint_every_steps=2, eval_every_epochs=0, log_every_steps=1))
    with pytest.raises(TrainingDivergedError, match=r"loss became nan .* step 5.*last good checkpoint \(step 4\)"):
        loop.run_loop()
    ckpt = TrainCheckpointer(tmp_path / "checkpoints" / "toy")
    assert ckpt.latest_step() == 4
    ckpt.close()
    # metrics.jsonl holds the finite steps only
    assert (tmp_path / "metrics.jsonl").read_text().count('"kind": "train"') >= 1


def test_keeps_last_n_and_best(tmp_path):
    mious = iter([0.1, 0.9, 0.2, 0.3, 0.4, 0.5])
    config = _config(checkpoint_every_steps=0, eval_every_epochs=1, keep_checkpoints=2)
    loop = _loop(tmp_path, [1.0] * 12, config, validate=lambda st: {"miou": next(mious)})
    state = loop.run_loop()
    assert int(state.step) == 12
    ckpt = TrainCheckpointer(tmp_path / "checkpoints" / "toy")
    assert ckpt.all_steps() == [4, 10, 12]  # best (miou 0.9 at step 4) + the last two
    assert ckpt.best_step() == 4
    # resuming a finished run does nothing and returns the saved state
    ckpt.close()
    again = _loop(tmp_path, [1.0] * 12, config, validate=lambda st: {"miou": 0.0}).run_loop()
    np.testing.assert_allclose(np.asarray(again.params["w"]), np.asarray(state.params["w"]))


def test_resume_midway_equals_straight(tmp_path):
    config = _config(checkpoint_every_steps=3, eval_every_epochs=0)
    values = [float(v) for v in np.linspace(0.5, 1.5, 8)]
    straight = _loop(tmp_path / "a", values, config).run_loop()
    first = _loop(tmp_path / "b", values[:3] + [float("nan")] * 5, config)  # dies after the step-3 checkpoint
    with pytest.raises(TrainingDivergedError):
        first.run_loop()
    resumed = _loop(tmp_path / "b", values, config).run_loop()
    np.testing.assert_allclose(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]), rtol=1e-6)


def test_batch_must_divide_devices():
    mesh = make_mesh(jax.devices()[:1])
    assert check_batch_size(3, mesh) == 3
    fake = type("M", (), {"devices": np.empty(8, object)})()
    with pytest.raises(ValueError, match=r"batch_size=12 is not divisible by the 8 devices"):
        check_batch_size(12, fake)


def test_refiner_runs_per_stage_and_shared():
    from magnet_jax.training.spec import refiner_runs

    c = default_config()  # Cityscapes-like: 4 scales, one refiner per stage
    runs = refiner_runs(c, ())
    assert [(r.name, r.stage) for r in runs] == [("refiner_stage1", 1), ("refiner_stage2", 2), ("refiner_stage3", 3)]
    # a per-stage run draws its fine scale from that stage only (the original: one run per scale)
    assert runs[1].data_scales == ((256, 128), (1024, 512))
    assert [r.seed for r in runs] == [1, 2, 3]  # config.seed + stage
    c.train.stage = 2
    assert [(r.name, r.stage) for r in refiner_runs(c, ())] == [("refiner_stage2", 2)]
    c.train.shared_refiner = True
    (shared,) = refiner_runs(c, ())
    assert (shared.name, shared.stage, shared.seed) == ("refiner", None, 0)
    assert shared.data_scales == ((256, 128), (512, 256), (1024, 512), (2048, 1024))


def test_run_identity_excludes_only_resumable_fields():
    """A resume compares every field that changes a step; stopping / logging fields may change."""
    from magnet_jax.training.spec import backbone_run

    c = default_config()
    base = backbone_run(c, ()).identity()
    c.train.max_steps, c.train.log_every_steps, c.train.progress = 7, 3, False
    assert backbone_run(c, ()).identity() == base
    c.train.lr = 0.5
    changed = backbone_run(c, ()).identity()
    assert {k for k in base if base[k] != changed[k]} == {"optim.lr"}


def test_refiner_run_records_the_frozen_backbones_conv_algorithm():
    """Refiner training computes its frozen backbone as inference does; a resume with another one is refused."""
    from magnet_jax.training.checkpointing import describe_differences, resume_differences
    from magnet_jax.training.spec import backbone_run, refiner_runs

    c = default_config()
    assert c.magnet.conv_algorithm == "auto"
    auto = refiner_runs(c, ())[0]
    assert auto.frozen_conv == "auto"
    c.magnet.conv_algorithm = "direct"
    direct = refiner_runs(c, ())[0]
    diffs = resume_differences(auto.identity(), direct.identity())
    assert diffs == [("frozen_conv", "auto", "direct")]
    assert describe_differences(diffs) == "magnet.conv_algorithm: 'auto' -> 'direct'"
    assert backbone_run(c, ()).frozen_conv == "direct"  # the trained model's forward is always direct
