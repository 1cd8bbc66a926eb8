"""Streamed prediction with each tile's patch batch split over 8 devices gives the predictions of 1 device.

Runs in a subprocess because the device count is fixed when JAX starts
(`--xla_force_host_platform_device_count=8`); both runs happen there (a 1-device mesh and the
8-device mesh of `magnet_jax.sharding.make_mesh`) and are compared here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    from magnet_jax.data.synthetic import generate_sample
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.models import build_model
    from magnet_jax.sharding import make_mesh

    assert jax.device_count() == 8, jax.devices()
    image = generate_sample(1234, "test", 2, 384)[0]
    backbone = build_model("small", 5, seed=7)
    backbone.classify.kernel[...] = backbone.classify.kernel[...] * 30.0
    refiner = build_model("refinement", 5, seed=8)
    # two chained stages, 3x3 and 5x5 overlapping grids in 2x2-patch tiles
    plan = make_plan([(96, 96), (192, 192), (384, 384)], (88, 88), (80, 80), 5, n_patches=-1, n_points=0.5)
    options = StreamOptions(mode="on", tile_patches=2)
    out = {}
    for name, mesh in (("one", make_mesh(jax.devices()[:1])), ("eight", make_mesh())):
        res = MagNetPredictor(plan, backbone, refiner, stream=options, mesh=mesh).predict(image, keep_labels=True)
        for s in res.stages:
            out[f"{name}_labels{s.index}"] = s.argmax.read(0, s.size_hw[0], 0, s.size_hw[1])
            out[f"{name}_points{s.index}"] = np.int64(s.points)
        out[f"{name}_probs1"] = res.stages[1].probs.read(0, 192, 0, 192)
        out[f"{name}_devices"] = np.int64(mesh.devices.size)
        res.close()
    np.savez(sys.argv[1], **out)
    """
)


@pytest.mark.slow
def test_streamed_8_devices_equal_1_device(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "runs.npz"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = dict(np.load(out))
    assert int(got["one_devices"]) == 1 and int(got["eight_devices"]) == 8
    for i in range(3):
        np.testing.assert_array_equal(got[f"eight_labels{i}"], got[f"one_labels{i}"], err_msg=f"stage {i}")
        assert int(got[f"eight_points{i}"]) == int(got[f"one_points{i}"])
    assert int(got["one_points2"]) > 0
    np.testing.assert_array_equal(got["eight_probs1"], got["one_probs1"])
