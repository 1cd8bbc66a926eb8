"""HRNet + OCR ("hrnet18+ocr", "hrnet48+ocr") against the original MagNet's manifests and outputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.models import build_model
from magnet_jax.models.state_dict import StateDictMismatchError, expected_state_dict_shapes, load_state_dict


def _manifest_shapes(parity_dir, name: str) -> dict[str, tuple[int, ...]]:
    manifest = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
    return {k: tuple(s) for k, s in manifest if not k.endswith("num_batches_tracked")}


def _forward_fn(model: nnx.Module):
    """One jitted call returning the eval logits and both heads (shared work is deduplicated)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def fwd(state, x):
        m = nnx.merge(graphdef, state)
        return m(x), m(x, return_heads=True)

    return lambda x: fwd(state, x)


@pytest.fixture(scope="module")
def hrnet18(synth_state_dict):
    model = build_model("hrnet18+ocr", 19)
    load_state_dict(model, synth_state_dict("hrnet18_ocr_19"), source="synth hrnet18_ocr_19")
    return model


def test_hrnet18_ocr_keys_match_manifest(parity_dir, hrnet18):
    assert expected_state_dict_shapes(hrnet18) == _manifest_shapes(parity_dir, "hrnet18_ocr_19")


def test_hrnet18_ocr_matches_original(parity_dir, hrnet18):
    ref = np.load(parity_dir / "modules" / "hrnet18_ocr_19.npz")
    x = jnp.asarray(ref["input"].transpose(0, 2, 3, 1))  # NCHW -> NHWC, [1, 128, 256, 3]
    logits, heads = _forward_fn(hrnet18)(x)
    assert set(heads) == {"out", "aux"}
    for name, got in (("logits", logits), ("out", heads["out"]), ("aux", heads["aux"])):
        want = ref[name].transpose(0, 2, 3, 1)
        assert got.shape == want.shape == (1, 128, 256, 19), name
        err = float(np.abs(np.asarray(got) - want).max())
        assert err <= 1e-3 * float(np.abs(want).max()), f"{name}: max abs err {err}"


def test_hrnet18_ocr_refuses_wrong_state_dict(synth_state_dict):
    model = build_model("hrnet18+ocr", 19)
    state = synth_state_dict("hrnet18_ocr_19")
    bad = dict(state)
    del bad["stage3.2.fuse_layers.2.0.1.0.weight"]
    bad["model.cls_head.weight"] = state["cls_head.weight"]
    with pytest.raises(StateDictMismatchError, match="missing"):
        load_state_dict(model, bad)
    misshaped = dict(state, **{"cls_head.weight": np.zeros((7, 512, 1, 1), np.float32)})
    with pytest.raises(StateDictMismatchError, match="misshaped"):
        load_state_dict(model, misshaped)


def test_bn_momentum_and_initial_mode(hrnet18):
    m = hrnet18
    # HRNet blocks use the original's BN_MOMENTUM 0.01, the OCR heads PyTorch's default 0.1.
    assert m.bn1.momentum == 0.01
    assert m.layer1[0].downsample[1].momentum == 0.01
    assert m.stage4[1].fuse_layers[3][0][2][1].momentum == 0.01
    assert m.transition3[3][0][1].momentum == 0.01
    assert m.conv3x3_ocr[1].momentum == 0.1
    assert m.aux_head[1].momentum == 0.1
    assert m.ocr_distri_head.object_context_block.f_pixel[1][0].momentum == 0.1
    assert m.ocr_distri_head.conv_bn_dropout[1][0].momentum == 0.1
    assert m.bn1.use_running_average and m.ocr_distri_head.conv_bn_dropout[2].deterministic


@pytest.mark.slow
def test_train_mode_updates_bn_and_uses_dropout_rngs():
    model = build_model("hrnet18+ocr", 5, seed=3)
    x = jax.random.normal(jax.random.key(0), (2, 32, 64, 3))
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))  # eval: deterministic

    bn_hr, bn_ocr = model.bn1, model.ocr_distri_head.conv_bn_dropout[1][0]
    hr_mean0, ocr_mean0 = np.asarray(bn_hr.mean[...]).copy(), np.asarray(bn_ocr.mean[...]).copy()
    model.train()
    heads = model(x, return_heads=True)
    assert heads["out"].shape == heads["aux"].shape == (2, 32, 64, 5)
    # Running statistics move by the block's PyTorch momentum: 0.01 in HRNet (checked exactly on
    # bn1, whose input conv1(x) is known), 0.1 in the OCR head.
    batch_mean = np.asarray(model.conv1(x)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(bn_hr.mean[...]), 0.99 * hr_mean0 + 0.01 * batch_mean, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(bn_ocr.mean[...]), ocr_mean0)

    # Dropout2d draws fresh masks from the `dropout` rng stream: two train calls differ in `out`,
    # while `aux` (no dropout, same batch statistics) is reproducible.
    again = model(x, return_heads=True)
    assert not np.allclose(np.asarray(heads["out"]), np.asarray(again["out"]))
    np.testing.assert_allclose(np.asarray(heads["aux"]), np.asarray(again["aux"]), rtol=1e-5, atol=1e-5)

    model.eval()
    assert model.bn1.use_running_average and model.ocr_distri_head.conv_bn_dropout[2].deterministic
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))


@pytest.mark.slow
def test_hrnet48_ocr_strict_load_and_small_forward(parity_dir, synth_state_dict):
    model = build_model("hrnet48+ocr", 19)
    assert expected_state_dict_shapes(model) == _manifest_shapes(parity_dir, "hrnet48_ocr_19")
    load_state_dict(model, synth_state_dict("hrnet48_ocr_19"), source="synth hrnet48_ocr_19")
    x = jax.random.normal(jax.random.key(0), (1, 32, 64, 3))
    # Eagerly: at this size that is quicker than compiling the W48 graph on a small CPU.
    logits, heads = model(x), model(x, return_heads=True)
    assert logits.shape == heads["out"].shape == heads["aux"].shape == (1, 32, 64, 19)
    assert np.isfinite(np.asarray(logits)).all()
    expected = (np.asarray(heads["out"]) + 0.4 * np.asarray(heads["aux"])) / 1.4
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
