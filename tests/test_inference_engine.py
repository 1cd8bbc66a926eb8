"""MagNetPredictor and evaluation on tiny stand-in models (fast): shapes, modes, metrics, pictures."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.config import default_config
from magnet_jax.inference.engine import MagNetPredictor, prepare_patches
from magnet_jax.inference.evaluate import evaluate_source, results_table
from magnet_jax.inference.plan import make_plan

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


def test_evaluate_source_metrics_and_pictures(models, tmp_path):
    backbone, refiners = models
    pred = MagNetPredictor(_plan(), backbone, refiners)
    samples = []
    for i in range(2):
        img = _image(seed=i)
        label = np.zeros(img.shape[:2], np.uint8)
        label[75:, 57:] = 2
        label[:5] = 255  # ignored
        samples.append({"image": img, "label": label, "name": f"img{i}"})
    res = evaluate_source(
        pred,
        _ListSource(samples),
        num_classes=N_CLASSES,
        miou_classes_=[1, 2, 3],
        ignore_label=255,
        pictures_dir=str(tmp_path / "pics"),
        num_pictures=1,
        progress=False,
    )
    assert res["num_images"] == 2
    for key in ("coarse", "refined"):
        cm = np.array(res[key]["confusion"])
        assert cm.sum() == 2 * (150 - 5) * 170  # labels are compared at their own resolution
        assert 0.0 <= res[key]["miou"] <= 1.0
        assert res[key]["miou"] == pytest.approx(np.mean(np.array(res[key]["iou"])[[1, 2, 3]]))
    assert (tmp_path / "pics" / "img0.png").exists() and not (tmp_path / "pics" / "img1.png").exists()
    assert "mIoU" in results_table(res)
    json.dumps(res)


def test_run_evaluate_with_injected_predictor(models, tmp_path):
    from magnet_jax.inference.evaluate import run_evaluate

    backbone, refiners = models
    pred = MagNetPredictor(_plan(), backbone, refiners)
    c = default_config()
    c.data.name, c.data.num_classes, c.data.miou_classes = "custom", N_CLASSES, ""
    c.eval.save_pictures = True
    label = np.ones((150, 170), np.uint8)
    out = run_evaluate(
        c, str(tmp_path), predictor=pred, source=_ListSource([{"image": _image(), "label": label, "name": "a"}])
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["refined"]["miou"] == pytest.approx(out["refined"]["miou"])
    assert saved["miou_classes"] == list(range(N_CLASSES))
    assert (tmp_path / "pictures" / "a.png").exists()


def test_refresh_weights_picks_up_new_values(models):
    backbone, refiners = models
    ref = TinyRefiner(N_CLASSES, 5)
    pred = MagNetPredictor(_plan(), backbone, [ref])
    before = np.asarray(pred.predict(_image()).final_probs)
    ref.conv.kernel[...] = ref.conv.kernel[...] * 3.0
    pred.refresh_weights()
    after = np.asarray(pred.predict(_image()).final_probs)
    assert np.abs(after - before).max() > 1e-3
