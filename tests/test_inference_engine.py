"""MagNetPredictor and evaluation on tiny stand-in models (fast): shapes, modes, metrics, pictures."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.config import default_config
from magnet_jax.evaluation import Evaluator, format_results
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor, prepare_patches

N_CLASSES = 4


class TinyBackbone(nnx.Module):
    """Colour -> class logits, enough structure for non-trivial uncertainty."""

    def __init__(self, n: int, seed: int = 0):
        self.conv = nnx.Conv(3, n, (3, 3), padding="SAME", rngs=nnx.Rngs(seed))

    def __call__(self, x):
        return 4.0 * self.conv(x)


class TinyRefiner(nnx.Module):
    def __init__(self, n: int, seed: int = 1):
        self.conv = nnx.Conv(2 * n, n, (3, 3), padding="SAME", rngs=nnx.Rngs(seed))

    def __call__(self, fine, coarse):
        return 3.0 * self.conv(jnp.concatenate([fine, coarse], axis=-1))


def _image(h=150, w=170, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (200, 40, 40)
    img[h // 2 :, : w // 3] = (40, 200, 40)
    img[h // 2 :, w // 3 :] = (40, 40, 200)
    return np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8)


def _plan(**kw):
    args = dict(n_patches=-1, n_points=0.5, smooth_kernel=3, compat="reference", patch_batch_size=3)
    args.update(kw)
    return make_plan([(48, 32), (96, 64), (192, 128)], (48, 32), (40, 24), N_CLASSES, **args)


@pytest.fixture(scope="module")
def models():
    return TinyBackbone(N_CLASSES), [TinyRefiner(N_CLASSES, 1), TinyRefiner(N_CLASSES, 2)]


def test_prepare_patches_shapes():
    plan = _plan()
    patches = prepare_patches(_image(), plan)
    assert [p.shape for p in patches] == [(1, 24, 40, 3), (4, 24, 40, 3), (16, 24, 40, 3)]
    assert patches[0].dtype == np.float32
    with pytest.raises(ValueError, match="RGB uint8"):
        prepare_patches(np.zeros((10, 10), np.uint8), plan)


@pytest.mark.parametrize("compat", ["reference", "paper"])
def test_predict_full_shapes_and_points(models, compat):
    backbone, refiners = models
    plan = _plan(compat=compat)
    pred = MagNetPredictor(plan, backbone, refiners)
    res = pred.predict(_image())
    assert [s.argmax.shape for s in res.stages] == [(24, 40), (64, 96), (128, 192)]
    assert all(s.argmax.dtype == np.uint8 for s in res.stages)
    assert res.final_probs.shape == (128, 192, N_CLASSES)
    for s, st in zip(res.stages[1:], plan.stages, strict=False):
        assert s.points == st.budget  # full MagNet: every chosen point is written
        assert sorted(s.selected.tolist()) == list(range(st.n_total))
        assert s.uncertainty.shape == s.error.shape == st.size_hw
    np.testing.assert_allclose(np.asarray(res.final_probs).sum(-1), 1.0, atol=1e-5)
    assert pred.final_argmax(res).shape == (128, 192)
    # a second image reuses the compiled stages
    res2 = pred.predict(_image(seed=1))
    assert res2.stages[-1].argmax.shape == (128, 192)


@pytest.mark.slow
def test_fast_modes_differ_as_documented(models):
    backbone, refiners = models
    image = _image()
    ref = MagNetPredictor(_plan(n_patches=2, compat="reference"), backbone, refiners).predict(image)
    pap = MagNetPredictor(_plan(n_patches=2, compat="paper"), backbone, refiners).predict(image)
    for r, p in zip(ref.stages[1:], pap.stages[1:], strict=False):
        assert len(r.selected) == len(p.selected) == 2
        assert r.points <= p.points  # reference zeroes the error inside the refined patches
    # paper: budget fits inside the refined patches at stage 1 (2 of 4 patches, 50% of pixels)
    assert pap.stages[1].points == _plan(n_patches=2).stages[0].budget


def test_refinement_skipped_with_zero_patches(models):
    backbone, _ = models
    plan = _plan(n_patches=0)
    pred = MagNetPredictor(plan, backbone, [])
    res = pred.predict(_image())
    assert len(res.stages) == 1
    assert pred.final_argmax(res).shape == (128, 192)


def test_shared_refiner_batch_padding_and_fused_stages(models):
    backbone, refiners = models
    # batch 3 does not divide 4 or 16 patches: padding must not change the result; nor does fusing
    # each stage into a single jit
    a = MagNetPredictor(_plan(patch_batch_size=3), backbone, refiners[:1], split_stages=True).predict(_image())
    b = MagNetPredictor(_plan(patch_batch_size=16), backbone, refiners[:1], split_stages=False).predict(_image())
    for x, y in zip(a.stages, b.stages, strict=False):
        np.testing.assert_allclose(np.asarray(x.probs), np.asarray(y.probs), atol=1e-5)
        assert (x.argmax != y.argmax).mean() < 1e-3


class _ListSource:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def _dataset(miou_classes: str = ""):
    from magnet_jax.data import dataset_spec

    c = default_config()
    c.data.name, c.data.num_classes, c.data.miou_classes = "custom", N_CLASSES, miou_classes
    return dataset_spec(c)


def _samples(n=2):
    samples = []
    for i in range(n):
        img = _image(seed=i)
        label = np.zeros(img.shape[:2], np.uint8)
        label[75:, 57:] = 2
        label[:5] = 255  # ignored
        samples.append({"image": img, "label": label, "name": f"img{i}"})
    return samples


def test_evaluator_views_metrics_and_schema(models):
    backbone, refiners = models
    pred = MagNetPredictor(_plan(), backbone, refiners)
    res = Evaluator(pred, _dataset("1,2,3"), patch_view=True).run(_ListSource(_samples()), progress=False)
    assert res["num_images"] == 2 and res["partial"] is False
    for key in ("coarse", "refined", "patch"):
        cm = np.array(res["confusion"][key])
        assert cm.sum() == 2 * (150 - 5) * 170  # labels are compared at their own resolution
        assert 0.0 <= res["miou"][key] <= 1.0
        assert res["miou"][key] == pytest.approx(np.mean(np.array(res["iou"][key])[[1, 2, 3]]))
    stages = res["miou"]["stages"]
    assert len(stages) == len(pred.plan.scales)
    assert stages[0] == res["miou"]["coarse"] and stages[-1] == res["miou"]["refined"]
    plan = pred.plan
    assert res["compute"]["backbone_passes"] == 1 + sum(st.k for st in plan.stages)
    assert res["compute"]["points_budget"] == [st.budget for st in plan.stages]
    assert "mIoU" in format_results(res) and "patch" in format_results(res)
    json.dumps(res)


def test_evaluator_equals_direct_prediction(models):
    """The refined and coarse views are the predictor's own argmax at the label's size."""
    from magnet_jax.metrics import confusion_matrix

    backbone, refiners = models
    pred = MagNetPredictor(_plan(), backbone, refiners)
    samples = _samples(1)
    res = Evaluator(pred, _dataset()).run(_ListSource(samples), progress=False)
    out = pred.predict(samples[0]["image"])
    label = samples[0]["label"]
    refined = pred.argmax_at(out.final_probs, label.shape)
    coarse = pred.argmax_at(out.stages[0].probs, label.shape)
    np.testing.assert_array_equal(res["confusion"]["refined"], confusion_matrix(label, refined, N_CLASSES, 255))
    np.testing.assert_array_equal(res["confusion"]["coarse"], confusion_matrix(label, coarse, N_CLASSES, 255))


def test_swap_weights_reuses_compiled_stages(models):
    backbone, refiners = models
    pred = MagNetPredictor(_plan(), backbone, [TinyRefiner(N_CLASSES, 5)])
    evaluator = Evaluator(pred, _dataset())
    source = _ListSource(_samples(1))
    first = evaluator.run(source, progress=False)
    other = TinyRefiner(N_CLASSES, 9)
    evaluator.swap_weights(refiners=[other])
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None
    )
    swapped = evaluator.run(source, progress=False)
    assert compiles == []  # the compiled stages were reused
    assert swapped["confusion"]["refined"] != first["confusion"]["refined"]  # the new weights were used
    fresh = Evaluator(MagNetPredictor(_plan(), backbone, [other]), _dataset()).run(source, progress=False)
    assert swapped["confusion"] == fresh["confusion"]
    with pytest.raises(ValueError, match="architecture differs"):
        evaluator.swap_weights(backbone=TinyRefiner(N_CLASSES))


def test_interrupted_evaluation_keeps_partial_results(models):
    from magnet_jax.evaluation import EvaluationInterrupted

    class Broken(_ListSource):
        def __getitem__(self, i):
            if i == 1:
                raise ValueError("cannot read label x.png: truncated")
            return super().__getitem__(i)

    backbone, refiners = models
    evaluator = Evaluator(MagNetPredictor(_plan(), backbone, refiners), _dataset())
    with pytest.raises(EvaluationInterrupted, match="sample 1 of 3") as info:
        evaluator.run(Broken(_samples(3)), progress=False)
    partial = info.value.results
    assert partial["partial"] is True and partial["num_images"] == 1
    assert np.array(partial["confusion"]["refined"]).sum() == (150 - 5) * 170
    assert "truncated" in partial["error"]


@pytest.mark.slow  # recompiles a predictor; CI time (README: Tests)
def test_refresh_weights_picks_up_new_values(models):
    backbone, refiners = models
    ref = TinyRefiner(N_CLASSES, 5)
    pred = MagNetPredictor(_plan(), backbone, [ref])
    before = np.asarray(pred.predict(_image()).final_probs)
    ref.conv.kernel[...] = ref.conv.kernel[...] * 3.0
    pred.refresh_weights()
    after = np.asarray(pred.predict(_image()).final_probs)
    assert np.abs(after - before).max() > 1e-3


def test_batch_images_equal_one_at_a_time(models):
    """`config.eval.batch_images`: the stages vmapped over same-size images give each image's own run
    (paper mode here; the reference mode's tie replay is batched the same way)."""
    backbone, refiners = models
    pred = MagNetPredictor(_plan(compat="paper"), backbone, refiners)
    images = [_image(seed=s) for s in range(3)]
    batched = pred.predict_batch(images)
    for image, got in zip(images, batched, strict=True):
        want = pred.predict(image)
        assert [s.points for s in got.stages] == [s.points for s in want.stages]
        for a, b in zip(got.stages, want.stages, strict=True):
            assert (a.argmax == b.argmax).mean() >= 0.999
        np.testing.assert_allclose(np.asarray(got.final_probs), np.asarray(want.final_probs), atol=1e-5)
    samples = _samples(3)
    one = Evaluator(pred, _dataset()).run(_ListSource(samples), progress=False)
    two = Evaluator(pred, _dataset()).run(_ListSource(samples), progress=False, batch_images=2)
    assert two["num_images"] == 3
    assert two["miou"]["refined"] == pytest.approx(one["miou"]["refined"], abs=1e-3)
