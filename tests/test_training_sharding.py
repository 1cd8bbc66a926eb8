"""A training step on 1 device and on 8 (simulated CPU) devices gives the same loss and parameters.

Runs in a subprocess because the device count is fixed when JAX starts
(`--xla_force_host_platform_device_count=8`). BatchNorm statistics are over the global batch,
so the refiner (BatchNorm in training mode) must match too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from magnet_jax.models import build_model
    from magnet_jax.training.backbone_step import make_backbone_step
    from magnet_jax.sharding import make_mesh, replicate, shard_batch
    from magnet_jax.training.optim import sgd_coupled
    from magnet_jax.training.refiner_step import make_refiner_step
    from magnet_jax.training.state import init_train_state, split_model

    assert jax.device_count() == 8, jax.devices()
    n, hw, b = 3, 32, 8
    rng = np.random.default_rng(0)
    images = rng.normal(size=(b, hw, hw, 3)).astype(np.float32)
    labels = rng.integers(0, n, (b, hw, hw)).astype(np.int32)
    labels[:, :4] = 255
    boxes = np.stack([rng.uniform(0, 8, b), rng.uniform(0, 8, b)], 1).astype(np.float32)
    boxes = np.concatenate([boxes, boxes + 16], 1)
    ref_batch = {"coarse_image": images, "fine_image": images[:, ::-1].copy(), "label": labels, "box": boxes}
    bb_batch = {"image": images, "label": labels}
    # The original's learning rates: backbone 0.01 (poly), refiner 1e-3 (MultiStepLR).
    btx, rtx = sgd_coupled(1e-2, 0.9, 5e-4), sgd_coupled(1e-3, 0.9, 5e-4)
    sched = lambda s: 1e-3

    def run(devices):
        mesh = make_mesh(devices)
        bdef, p, bs, r = split_model(build_model("small", n, seed=1), "small")
        bstate = replicate(init_train_state(p, bs, r, btx), mesh)
        bstep = make_backbone_step(bdef, btx, sched, num_classes=n, ignore_label=255, aux_weight=0.4, mesh=mesh)
        rdef, rp, rbs, rr = split_model(build_model("refinement", n, seed=2), "refinement")
        rstate = replicate(init_train_state(rp, rbs, rr, rtx), mesh)
        # a confident frozen backbone (random ones give near-uniform probabilities, which the refiner's
        # input BatchNorm would amplify into an ill-conditioned comparison)
        p["classify"]["kernel"] = p["classify"]["kernel"] * 30.0
        frozen = replicate((p, bs, r), mesh)
        rstep = make_refiner_step(bdef, rdef, rtx, sched, num_classes=n, ignore_label=255, input_hw=(hw, hw),
                                  input_order="fine_first", ohem_thresh=0.7, ohem_min_kept=2000, mesh=mesh)
        losses = []
        for _ in range(2):
            bstate, bm = bstep(bstate, shard_batch(bb_batch, mesh))
            rstate, rm = rstep(rstate, frozen, shard_batch(ref_batch, mesh))
            losses += [float(bm["loss"]), float(rm["loss"])]
        leaves = [np.asarray(x) for x in jax.tree.leaves((bstate.params, bstate.batch_stats,
                                                         rstate.params, rstate.batch_stats))]
        assert rstate.params["seg_conv"]["kernel"].sharding.is_fully_replicated
        return losses, leaves, np.asarray(rm["conf_fine"])

    l1, p1, c1 = run(jax.devices()[:1])
    l8, p8, c8 = run(jax.devices())
    print("RESULT " + json.dumps({
        "loss_1": l1, "loss_8": l8,
        "loss_diff": max(abs(a - b) for a, b in zip(l1, l8)),
        "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p8)),
        "conf_equal": bool((c1 == c8).all()),
    }))
    """
)


@pytest.mark.slow
def test_one_vs_eight_devices(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    assert result["loss_diff"] <= 1e-5, result
    assert result["param_diff"] <= 1e-5, result
    assert result["conf_equal"], result
