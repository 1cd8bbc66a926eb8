"""Optimizer and schedules equal PyTorch's SGD(momentum, weight_decay), MultiStepLR and HRNet's poly decay."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from magnet_jax.config import default_config
from magnet_jax.training.optim import make_schedule, multistep_schedule, poly_schedule, sgd_coupled


def test_sgd_coupled_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    lrs = [0.1, 0.1, 0.01, 0.01]

    tp = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.SGD([tp], lr=lrs[0], momentum=0.9, weight_decay=5e-4)
    for g, lr in zip(grads, lrs, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        tp.grad = torch.tensor(g)
        opt.step()

    step_lrs = jnp.asarray(lrs)
    tx = sgd_coupled(lambda count: step_lrs[count], 0.9, 5e-4)
    params = {"w": jnp.asarray(p0)}
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update({"w": jnp.asarray(g)}, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(np.asarray(params["w"]), tp.detach().numpy(), rtol=1e-6, atol=1e-6)


def test_multistep_matches_torch():
    torch = pytest.importorskip("torch")
    spe = 3
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4, 5], gamma=0.1)
    expected = []
    for _ in range(7):
        expected += [opt.param_groups[0]["lr"]] * spe
        opt.step()
        sched.step()
    ours = multistep_schedule(1e-3, [2, 4, 5], 0.1, spe)
    got = [float(ours(s)) for s in range(7 * spe)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_poly_is_hrnet_adjust_learning_rate():
    base, max_it = 0.01, 10
    sched = poly_schedule(base, max_it, 0.9)
    # HRNet sets lr after step i to base * (1 - i / max_it) ** 0.9; step 0 uses base.
    expected = [base] + [base * (1 - i / max_it) ** 0.9 for i in range(max_it - 1)]
    np.testing.assert_allclose([float(sched(k)) for k in range(max_it)], expected, rtol=1e-6)


def test_make_schedule_auto():
    """lr_schedule=auto: poly for the backbone run, MultiStepLR (milestones 10,20,...) for refiner runs."""
    from magnet_jax.training.spec import backbone_run, refiner_runs

    c = default_config()
    backbone = backbone_run(c, tuple(range(19))).optim
    assert backbone.schedule == "poly"
    assert float(make_schedule(backbone, 10, 100)(0)) == pytest.approx(c.train.lr)
    assert float(make_schedule(backbone, 10, 100)(99)) < 0.1 * c.train.lr
    refiner = refiner_runs(c, tuple(range(19)))[0].optim
    assert refiner.schedule == "multistep"
    assert float(make_schedule(refiner, 10, 500)(100)) == pytest.approx(c.train.lr * 0.1)
