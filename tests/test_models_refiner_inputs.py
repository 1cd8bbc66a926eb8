"""`models.refinement.refiner_inputs` / `refine`: the one place the refiner's inputs are built and it is called.

Each case compares with the expressions inference (`inference/stages.py`) and training
(`training/refiner_step.py`) used before they shared this code, bit for bit, on real models.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.models import build_model
from magnet_jax.models.refinement import class_probabilities, ordered_inputs, refine, refiner_inputs
from magnet_jax.ops import required_samples, roi_align, roi_align_batched
from magnet_jax.training.refiner_step import refiner_inputs as training_refiner_inputs
from magnet_jax.training.refiner_step import refiner_model_inputs
from magnet_jax.training.state import split_model

N = 5
IH, IW = 32, 48


@pytest.fixture(scope="module")
def models():
    backbone = build_model("small", N, seed=1)
    # a more confident backbone: random ones give near-uniform probabilities
    backbone.classify.kernel.value = backbone.classify.kernel.value * 20.0
    return backbone, build_model("refinement", N, seed=2)


def _images(b: int, h: int, w: int, seed: int) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (b, h, w, 3), jnp.float32)


@pytest.mark.slow
def test_inference_inputs_equal_the_stage_expressions(models):
    backbone, refiner = models
    patches = _images(3, IH, IW, 0)
    probs = class_probabilities(backbone(_images(1, 64, 96, 1)))[0]  # [64, 96, C], a stage's map
    boxes = np.array([[0, 0, 48, 32], [30, 20, 78, 52], [48, 32, 96, 64]], np.float32)
    samples = required_samples(boxes, (IH, IW))

    fine, coarse = refiner_inputs(backbone, patches, probs, jnp.asarray(boxes), max_samples=samples)
    out = class_probabilities(refine(refiner, fine, coarse))

    old_fine = jax.nn.softmax(backbone(patches).astype(jnp.float32), -1)
    old_coarse = roi_align(probs, jnp.asarray(boxes), (IH, IW), max_samples=samples)
    old_out = jax.nn.softmax(refiner(old_fine, old_coarse).astype(jnp.float32), axis=-1)
    np.testing.assert_array_equal(np.asarray(fine), np.asarray(old_fine))
    np.testing.assert_array_equal(np.asarray(coarse), np.asarray(old_coarse))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(old_out))
    assert fine.shape == coarse.shape == out.shape == (3, IH, IW, N)
    np.testing.assert_allclose(np.asarray(fine).sum(-1), 1.0, atol=1e-5)
    # the first box is the map's top-left 48 x 32 block at unit scale: one sample per bin, at the
    # bin's centre, half-way between pixel centres (torchvision's aligned=False): a 2 x 2 average
    p = np.asarray(probs)
    quad = (p[:IH, :IW] + p[1 : IH + 1, :IW] + p[:IH, 1 : IW + 1] + p[1 : IH + 1, 1 : IW + 1]) / 4
    np.testing.assert_allclose(np.asarray(coarse[0]), quad, atol=1e-6)
    assert float(np.asarray(fine).max()) > 2.0 / N  # far from uniform: the check is not on flat maps
    # tiled inference: the map's window at an origin, boxes in full-map pixels, gives the same crops
    window = probs[16:, 24:]
    _, tiled = refiner_inputs(
        backbone, patches[2:], window, jnp.asarray(boxes[2:]), max_samples=samples, full_hw=(64, 96),
        origin=jnp.array([16, 24], jnp.int32),
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(tiled), np.asarray(coarse[2:]))


def test_training_inputs_equal_the_step_expressions(models):
    backbone, refiner = models
    bdef, params, batch_stats, rngs = split_model(backbone, "small")
    frozen = (params, batch_stats, rngs)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 16, (2, 2)).astype(np.float32)
    batch = {
        "coarse_image": _images(2, IH, IW, 2),
        "fine_image": _images(2, IH, IW, 3),
        "box": jnp.asarray(np.concatenate([x0, x0 + [24, 16]], 1)),
    }
    fine, crop = training_refiner_inputs(bdef, frozen, batch, (IH, IW))

    model = bdef.merge(train=False, params=params, batch_stats=batch_stats, rngs=rngs)
    old_coarse = jax.nn.softmax(model(batch["coarse_image"]).astype(jnp.float32), axis=-1)
    old_fine = jax.nn.softmax(model(batch["fine_image"]).astype(jnp.float32), axis=-1)
    old_crop = roi_align_batched(old_coarse, batch["box"], (IH, IW), max_samples=(1, 1))
    np.testing.assert_array_equal(np.asarray(fine), np.asarray(old_fine))
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(old_crop))

    first, second = refiner_model_inputs(bdef, frozen, batch, (IH, IW), "coarse_first")
    np.testing.assert_array_equal(np.asarray(first), np.asarray(old_crop))
    np.testing.assert_array_equal(np.asarray(second), np.asarray(old_fine))
    coarse_first = refine(refiner, fine, crop, order="coarse_first")
    np.testing.assert_array_equal(np.asarray(coarse_first), np.asarray(refiner(old_crop, old_fine)))
    fine_first = refine(refiner, fine, crop)
    assert float(jnp.abs(fine_first - coarse_first).max()) > 1e-3  # the order matters to the refiner


def test_bad_order_and_coarse_shape(models):
    backbone, _ = models
    a = jnp.zeros((1, 4, 4, N))
    with pytest.raises(ValueError, match="refiner input order: expected one of fine_first, coarse_first, got 'fine'"):
        ordered_inputs(a, a, "fine")
    with pytest.raises(ValueError, match=r"\(without full_hw / origin\), got shape \(4, 4\)"):
        refiner_inputs(backbone, _images(1, 16, 16, 0), jnp.zeros((4, 4)), jnp.zeros((1, 4)), max_samples=(1, 1))
