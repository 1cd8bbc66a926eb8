"""Streamed prediction with each tile's patch batch split over 8 devices gives the predictions of 1 device.

Runs in a child process because the device count is fixed when JAX starts (`helpers.multidevice`); both
runs happen there (a 1-device mesh and the 8-device mesh of `magnet_jax.sharding.make_mesh`,
`helpers.children.streamed_one_vs_eight_devices`) and are compared here.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.multidevice import run_child


@pytest.mark.slow
def test_streamed_8_devices_equal_1_device(tmp_path):
    out = tmp_path / "runs.npz"
    assert run_child("helpers.children:streamed_one_vs_eight_devices", out, devices=8) == {"devices": [1, 8]}
    got = dict(np.load(out))
    assert int(got["one_devices"]) == 1 and int(got["eight_devices"]) == 8
    for i in range(3):
        np.testing.assert_array_equal(got[f"eight_labels{i}"], got[f"one_labels{i}"], err_msg=f"stage {i}")
        assert int(got[f"eight_points{i}"]) == int(got[f"one_points{i}"])
    assert int(got["one_points2"]) > 0
    np.testing.assert_array_equal(got["eight_probs1"], got["one_probs1"])
