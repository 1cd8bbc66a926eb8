"""A training step on 1 device and on 8 (simulated CPU) devices gives the same loss and parameters.

Runs in a child process because the device count is fixed when JAX starts (`helpers.multidevice`; the steps
are `helpers.children.training_one_vs_eight_devices`). BatchNorm statistics are over the global batch,
so the refiner (BatchNorm in training mode) must match too.
"""

from __future__ import annotations

import pytest
from helpers.multidevice import run_child


@pytest.mark.slow
def test_one_vs_eight_devices(tmp_path):
    result = run_child("helpers.children:training_one_vs_eight_devices", devices=8, cwd=tmp_path)
    assert result["loss_diff"] <= 1e-5, result
    assert result["param_diff"] <= 1e-5, result
    assert result["conf_equal"], result
