"""Speed paths that must not change results: BatchNorm folded into convolutions (eval only), the
unrolled median filter at the pipeline's size, and the opt-in `config.magnet.dtype`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.config import default_config, validate_config
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.models import build_model
from magnet_jax.models.layers import batchnorm_folding
from magnet_jax.models.state_dict import load_state_dict
from magnet_jax.ops.median import median_filter


def _nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))


def _forward(model, folded: bool | None, *args) -> np.ndarray:
    graph, state = nnx.split(model)
    with batchnorm_folding(folded):  # a trace-time choice: trace (call) a fresh jit inside the block
        return np.asarray(jax.jit(lambda st, *a: nnx.merge(graph, st)(*a))(state, *args))


@pytest.mark.parametrize("manifest,model_name,n", [("refine_7", "refinement", 7), ("fpn_7", "fpn", 7)])
def test_folded_batchnorm_within_parity_tolerance(parity_dir, synth_state_dict, manifest, model_name, n):
    model = build_model(model_name, n)
    load_state_dict(model, synth_state_dict(manifest))
    data = np.load(parity_dir / "modules" / f"{manifest}.npz")
    args = (_nhwc(data["fine"]), _nhwc(data["coarse"])) if model_name == "refinement" else (_nhwc(data["input"]),)
    folded = _forward(model, True, *args).transpose(0, 3, 1, 2)
    want = data["logits"]
    scale = float(np.abs(want).max())
    assert float(np.abs(folded - want).max()) <= 1e-3 * scale  # the parity tests' tolerance
    unfolded = _forward(model, False, *args).transpose(0, 3, 1, 2)
    # float32 rounding only (a few 1e-5 relative after fpn's 50-odd convolutions)
    assert float(np.abs(folded - unfolded).max()) <= 1e-4 * scale
    assert not np.array_equal(folded, unfolded)  # the folded path did run


def test_training_mode_never_folds():
    model = build_model("refinement", 3)
    model.train()
    x = jax.random.uniform(jax.random.key(0), (2, 12, 10, 3))
    outs = []
    for folded in (True, False):
        with batchnorm_folding(folded):
            outs.append(np.asarray(model(x, x[:, ::-1])))
    np.testing.assert_array_equal(outs[0], outs[1])  # batch statistics: the literal layers either way


def _median_reference(x: np.ndarray, k: int) -> np.ndarray:
    h, w = x.shape
    p = np.pad(x, (((k - 1) // 2, k // 2), ((k - 1) // 2, k // 2)))
    win = np.lib.stride_tricks.sliding_window_view(p, (k, k)).reshape(h, w, k * k)
    return np.sort(win, axis=-1)[..., (k * k - 1) // 2]


def test_median_unrolled_bit_exact_at_pipeline_size():
    # an error-score-like map at 508 px: many exact zeros and repeated values (ties), median 11
    rng = np.random.default_rng(3)
    x = (rng.integers(0, 50, (508, 508)) / 49.0).astype(np.float32) * (rng.random((508, 508)) > 0.4)
    np.testing.assert_array_equal(np.asarray(median_filter(x, 11)), _median_reference(x, 11))


def test_dtype_validated():
    c = default_config()
    c.magnet.dtype = "float16"
    with pytest.raises(ValueError, match=r"^config\.magnet\.dtype: expected 'float32' or 'bfloat16', got 'float16'$"):
        validate_config(c)
    with pytest.raises(ValueError, match=r"^config\.magnet\.dtype: expected 'float32' or 'bfloat16', got 'fp16'$"):
        make_plan([(64, 64), (128, 128)], (64, 64), (64, 64), 3, dtype="fp16")
    assert default_config().magnet.dtype == "float32"


@pytest.mark.slow
def test_bfloat16_mode_agrees_with_float32():
    backbone, refiner = build_model("small", 4, seed=1), build_model("refinement", 4, seed=2)
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), np.uint8)
    image[:64] //= 3  # some structure for the classes to follow
    results = {}
    for dtype in ("float32", "bfloat16"):
        plan = make_plan([(64, 64), (128, 128)], (64, 64), (64, 64), 4, n_points=0.5, dtype=dtype)
        assert plan.dtype == dtype
        results[dtype] = MagNetPredictor(plan, backbone, refiner).predict(image)
    for a, b in zip(results["float32"].stages, results["bfloat16"].stages, strict=True):
        assert b.probs.dtype == jnp.float32
        assert float((a.argmax == b.argmax).mean()) >= 0.9
        assert not np.array_equal(np.asarray(a.probs), np.asarray(b.probs))  # bf16 did run
