"""ResNet-FPN, PSPNet and the refinement module against the original MagNet.

Tolerance (parity README): max abs error <= 1e-3 x max|logits|.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.models import build_model
from magnet_jax.models.blocks import BasicBlock, Bottleneck
from magnet_jax.models.fpn import ResnetFPN
from magnet_jax.models.psp import PSPNet
from magnet_jax.models.resnet import ResNet
from magnet_jax.models.state_dict import (
    StateDictMismatchError,
    expected_state_dict_shapes,
    load_state_dict,
    state_dict_from_model,
)


def _nchw_to_nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.ascontiguousarray(a.transpose(0, 2, 3, 1)))


def _assert_close_logits(got_nhwc, want_nchw: np.ndarray) -> None:
    got = np.asarray(got_nhwc).transpose(0, 3, 1, 2)
    assert got.shape == want_nchw.shape
    scale = float(np.abs(want_nchw).max())
    err = float(np.abs(got - want_nchw).max())
    assert err <= 1e-3 * scale, f"max abs err {err} > 1e-3 x {scale}"


def _manifest_shapes(parity_dir, name: str) -> dict[str, tuple[int, ...]]:
    entries = json.loads((parity_dir / "manifests" / f"{name}.json").read_text())
    return {k: tuple(s) for k, s in entries if not k.endswith("num_batches_tracked")}


def _jit_forward(model, **kwargs):
    """`model(*args, **kwargs)` compiled once per input shape (eager runs compile every op)."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, *args: nnx.merge(graphdef, st)(*args, **kwargs))
    return lambda *args: fn(state, *args)


# --------------------------------------------------------------------------- refinement


@pytest.mark.parametrize("name,num_classes", [("refine_19", 19), ("refine_7", 7)])
def test_refinement_matches_original(parity_dir, synth_state_dict, name, num_classes):
    model = build_model("refinement", num_classes)
    assert expected_state_dict_shapes(model) == _manifest_shapes(parity_dir, name)
    load_state_dict(model, synth_state_dict(name))
    data = np.load(parity_dir / "modules" / f"{name}.npz")
    logits = model(_nchw_to_nhwc(data["fine"]), _nchw_to_nhwc(data["coarse"]))
    _assert_close_logits(logits, data["logits"])


def test_refinement_argument_order_matters(parity_dir, synth_state_dict):
    model = build_model("refinement", 7)
    load_state_dict(model, synth_state_dict("refine_7"))
    data = np.load(parity_dir / "modules" / "refine_7.npz")
    fine, coarse = _nchw_to_nhwc(data["fine"]), _nchw_to_nhwc(data["coarse"])
    swapped = np.asarray(model(coarse, fine))
    assert np.abs(swapped - np.asarray(model(fine, coarse))).max() > 1e-2


# --------------------------------------------------------------------------- strictness


def test_load_state_dict_is_strict(synth_state_dict):
    model = build_model("refinement", 7)
    good = synth_state_dict("refine_7")
    before = state_dict_from_model(model)

    missing = dict(good)
    del missing["residual.1.conv2.weight"]
    with pytest.raises(StateDictMismatchError, match=r"missing.*residual\.1\.conv2\.weight"):
        load_state_dict(model, missing)

    extra = dict(good)
    extra["residual.2.conv1.weight"] = np.zeros((32, 128, 1, 1), np.float32)
    with pytest.raises(StateDictMismatchError, match=r"unexpected.*residual\.2\.conv1\.weight"):
        load_state_dict(model, extra)

    misshaped = dict(good)
    misshaped["seg_conv.weight"] = np.zeros((8, 128, 1, 1), np.float32)
    with pytest.raises(StateDictMismatchError, match=r"misshaped.*seg_conv\.weight"):
        load_state_dict(model, misshaped)

    # A refused state dict leaves the model untouched.
    after = state_dict_from_model(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)

    # Wrong class count: the 19-class refiner's weights do not fit a 7-class model.
    with pytest.raises(StateDictMismatchError, match=r"bn0\.weight"):
        load_state_dict(model, synth_state_dict("refine_19"))

    load_state_dict(model, good)  # and the real thing loads
    roundtrip = state_dict_from_model(model)
    assert all(np.array_equal(roundtrip[k], good[k]) for k in roundtrip)


# --------------------------------------------------------------------------- FPN


def test_fpn_matches_original(parity_dir, synth_state_dict):
    model = build_model("fpn", 7)
    assert expected_state_dict_shapes(model) == _manifest_shapes(parity_dir, "fpn_7")
    load_state_dict(model, synth_state_dict("fpn_7"))
    data = np.load(parity_dir / "modules" / "fpn_7.npz")
    heads = _jit_forward(model, return_heads=True)(_nchw_to_nhwc(data["input"]))
    assert set(heads) == {"out", "aux"} and heads["aux"] is None
    _assert_close_logits(heads["out"], data["logits"])


def test_small_resnets_and_fpn_variant():
    rngs = nnx.Rngs(params=0)
    r18 = ResNet(18, rngs=rngs)
    feats = jax.eval_shape(r18, jax.ShapeDtypeStruct((1, 65, 47, 3), jnp.float32))
    # conv7/2 -> 33x24, maxpool -> 17x12, then /2 three times with ceil-like conv arithmetic.
    assert [f.shape for f in feats] == [(1, 17, 12, 64), (1, 9, 6, 128), (1, 5, 3, 256), (1, 3, 2, 512)]
    keys = expected_state_dict_shapes(r18)
    assert "layer2.0.downsample.0.weight" in keys and "layer1.0.downsample.0.weight" not in keys
    assert "layer1.0.conv3.weight" not in keys
    fpn = ResnetFPN(5, rngs=nnx.Rngs(params=1), depth=34)
    assert expected_state_dict_shapes(fpn)["latlayer3.weight"] == (256, 64, 1, 1)
    assert _jit_forward(fpn)(jnp.zeros((1, 67, 93, 3))).shape == (1, 67, 93, 5)
    with pytest.raises(ValueError, match="depth"):
        ResNet(42, rngs=rngs)


def test_blocks_downsample_and_momentum():
    rngs = nnx.Rngs(params=0)
    b = Bottleneck(64, 64, stride=1, bn_momentum=0.01, rngs=rngs)
    assert b.downsample is not None  # 64 -> 256 channels
    assert b.bn1.momentum == 0.01 and b.downsample[1].momentum == 0.01
    b = Bottleneck(256, 64, bn_momentum=0.01, downsample_bn_momentum=0.1, rngs=rngs)
    assert b.downsample is None
    b = Bottleneck(256, 64, bn_momentum=0.01, downsample=True, downsample_bn_momentum=0.1, rngs=rngs)
    assert b.downsample[1].momentum == 0.1
    assert b(jnp.ones((1, 5, 5, 256))).shape == (1, 5, 5, 256)
    bb = BasicBlock(18, 36, stride=2, bn_momentum=0.01, rngs=rngs)
    assert bb.downsample is not None and bb(jnp.ones((1, 7, 7, 18))).shape == (1, 4, 4, 36)
    assert set(expected_state_dict_shapes(BasicBlock(18, 18, bn_momentum=0.01, rngs=rngs))) == {
        f"{m}{i}.{p}" for m in ("bn",) for i in (1, 2) for p in ("weight", "bias", "running_mean", "running_var")
    } | {"conv1.weight", "conv2.weight"}
    # The ResNet stem / shortcut BatchNorms use PyTorch's default momentum, the blocks 0.01.
    r = nnx.eval_shape(lambda: ResNet(50, rngs=nnx.Rngs(params=0)))  # structure only
    assert r.bn1.momentum == 0.1 and r.layer1[0].downsample[1].momentum == 0.1
    assert r.layer3[2].bn2.momentum == 0.01 and r.layer1[0].bn1.eps == 1e-5


# --------------------------------------------------------------------------- PSP


@pytest.fixture(scope="module")
def psp_7(parity_dir, synth_state_dict):
    model = build_model("psp", 7)
    state = synth_state_dict("psp_7")
    assert expected_state_dict_shapes(model) == _manifest_shapes(parity_dir, "psp_7")
    load_state_dict(model, state)
    return model, state


@pytest.fixture(scope="module")
def psp_7_run(psp_7):
    """One compiled PSP forward: (eval logits, heads, c5) for an input of odd size."""
    model, _ = psp_7
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(st, x):
        m = nnx.merge(graphdef, st)
        return m(x), m(x, return_heads=True), m.feats(x)[-1]

    x = jnp.asarray(np.random.RandomState(0).randn(2, 97, 130, 3).astype(np.float32))
    return x, lambda: run(state, x)


def test_psp_forward_and_eval_formula(psp_7_run):
    _, run = psp_7_run
    logits, heads, c5 = run()
    assert logits.shape == (2, 97, 130, 7) and c5.shape == (2, 4, 5, 2048)
    assert set(heads) == {"out", "aux"}
    assert heads["out"].shape == heads["aux"].shape == (2, 97, 130, 7)
    expected = (heads["out"] + 0.4 * heads["aux"]) / 1.4
    np.testing.assert_allclose(np.asarray(logits), np.asarray(expected), atol=1e-5 * float(jnp.abs(expected).max()))
    assert float(jnp.abs(heads["out"] - heads["aux"]).max()) > 1e-2  # the two heads differ
    # eval mode is deterministic (no dropout)
    np.testing.assert_array_equal(np.asarray(run()[0]), np.asarray(logits))


def _torch_psp_heads(state: dict[str, np.ndarray], c5: np.ndarray, size_hw: tuple[int, int]):
    """The PSP heads written from MAGNET_SPEC section 1 in PyTorch (eval), NCHW."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    t = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state.items()}

    def bn(x, p):
        return F.batch_norm(
            x, t[p + ".running_mean"], t[p + ".running_var"], t[p + ".weight"], t[p + ".bias"], False, 0.1, 1e-5
        )

    f = torch.from_numpy(c5)
    h, w = f.shape[2:]
    priors = []
    for i, s in enumerate((1, 2, 3, 6)):
        pooled = F.adaptive_avg_pool2d(f, (s, s))
        pooled = F.conv2d(pooled, t[f"psp.stages.{i}.1.weight"])
        priors.append(F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False))
    p = F.relu(F.conv2d(torch.cat(priors + [f], 1), t["psp.bottleneck.weight"], t["psp.bottleneck.bias"]))
    for k in (1, 2, 3):
        p = F.interpolate(p, size=(2 * p.shape[2], 2 * p.shape[3]), mode="bilinear", align_corners=False)
        p = F.conv2d(p, t[f"up_{k}.conv.0.weight"], t[f"up_{k}.conv.0.bias"], padding=1)
        p = F.prelu(bn(p, f"up_{k}.conv.1"), t[f"up_{k}.conv.2.weight"])
    out = F.interpolate(
        F.conv2d(p, t["final.weight"], t["final.bias"]), size=size_hw, mode="bilinear", align_corners=False
    )
    aux = F.interpolate(
        F.conv2d(f, t["classifier.weight"], t["classifier.bias"]), size=size_hw, mode="bilinear", align_corners=False
    )
    return out.numpy(), aux.numpy(), ((out + 0.4 * aux) / 1.4).numpy()


@pytest.mark.torch
def test_psp_heads_match_torch_reference(psp_7):
    """Pyramid pooling (uneven adaptive bins), upsampling blocks and both heads vs PyTorch."""
    model, state = psp_7
    rng = np.random.RandomState(1)
    # c5-like features: non-negative (post-ReLU), sizes that do not divide 2, 3 or 6.
    c5 = np.maximum(rng.randn(2, 2048, 7, 11).astype(np.float32), 0)
    size_hw = (221, 347)
    want_out, want_aux, want_logits = _torch_psp_heads(state, c5, size_hw)
    graphdef, st = nnx.split(model)
    out, aux = jax.jit(lambda st, f: nnx.merge(graphdef, st).heads(f, size_hw))(st, _nchw_to_nhwc(c5))
    _assert_close_logits(out, want_out)
    _assert_close_logits(aux, want_aux)
    _assert_close_logits((out + 0.4 * aux) / 1.4, want_logits)


@pytest.mark.torch
def test_psp_whole_model_against_torch_heads(psp_7, psp_7_run):
    """Whole forward = PyTorch heads applied to our ResNet-101 c5 (ResNet checked by the FPN parity)."""
    _, state = psp_7
    x, run = psp_7_run
    logits, _, c5 = run()
    c5 = np.ascontiguousarray(np.asarray(c5).transpose(0, 3, 1, 2))
    _, _, want = _torch_psp_heads(state, c5, x.shape[1:3])
    _assert_close_logits(logits, want)


def test_psp_train_mode():
    """Dropout2d and BatchNorm in training (on a ResNet-18 PSPNet: same head code, cheaper)."""
    model = PSPNet(7, rngs=nnx.Rngs(params=0, dropout=1), depth=18)
    model.eval()
    x = jnp.asarray(np.random.RandomState(3).randn(2, 64, 64, 3).astype(np.float32))
    mean_before = np.asarray(model.up_1.conv[1].mean[...])
    stem_before = np.asarray(model.feats.bn1.mean[...])
    block_before = np.asarray(model.feats.layer2[0].bn2.mean[...])
    model.train()
    assert model.drop_1.deterministic is False and model.drop_2.dropout.deterministic is False
    assert model.feats.bn1.use_running_average is False

    @nnx.jit
    def fwd(m, x):
        return m(x, return_heads=True)["out"]

    a = fwd(model, x)
    b = fwd(model, x)
    # dropout draws new channel masks on every call (the rng state advances)
    assert float(jnp.abs(a - b).max()) > 1e-4
    # running statistics moved
    assert not np.allclose(np.asarray(model.up_1.conv[1].mean[...]), mean_before)
    assert not np.allclose(np.asarray(model.feats.bn1.mean[...]), stem_before)
    assert not np.allclose(np.asarray(model.feats.layer2[0].bn2.mean[...]), block_before)
    model.eval()
    assert model.drop_1.deterministic is True and model.feats.bn1.use_running_average is True
    np.testing.assert_array_equal(np.asarray(fwd(model, x)), np.asarray(fwd(model, x)))


@pytest.mark.slow
def test_refinement_train_step_updates_bn(synth_state_dict):
    model = build_model("refinement", 7)
    load_state_dict(model, synth_state_dict("refine_7"))
    rng = np.random.RandomState(4)
    fine = jax.nn.softmax(jnp.asarray(rng.randn(2, 16, 24, 7).astype(np.float32)), -1)
    coarse = jax.nn.softmax(jnp.asarray(rng.randn(2, 16, 24, 7).astype(np.float32)), -1)
    bn0_mean = np.asarray(model.bn0.mean[...])
    bn0_var = np.asarray(model.bn0.var[...])
    model.train()
    x = jnp.concatenate([fine, coarse], -1)
    model(fine, coarse)
    # PyTorch: running = (1 - 0.01) * running + 0.01 * batch (unbiased variance)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    want_mean = 0.99 * bn0_mean + 0.01 * np.asarray(x.mean((0, 1, 2)))
    want_var = 0.99 * bn0_var + 0.01 * np.asarray(x.var((0, 1, 2))) * n / (n - 1)
    np.testing.assert_allclose(np.asarray(model.bn0.mean[...]), want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.bn0.var[...]), want_var, rtol=1e-5, atol=1e-6)

    # a gradient through the train-mode graph (BN state updates handled by nnx)
    loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(fine, coarse) ** 2))(model)
    assert np.isfinite(float(loss))
    assert sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)) > 0


def test_batchnorm_train_statistics_are_exact_for_offset_data():
    """Train-mode BatchNorm takes both moments in one pass; with |mean| >> std (the case where
    E[x^2] - E[x]^2 cancels) its output, gradient and running statistics match a float64
    two-pass reference."""
    from magnet_jax.models.layers import BatchNorm2d

    rng = np.random.default_rng(0)
    x64 = 100.0 + 0.05 * rng.standard_normal((4, 9, 11, 3)) * np.array([1.0, 3.0, 0.5])
    x = jnp.asarray(x64, jnp.float32)
    x64 = np.asarray(x, np.float64)  # the float32 values
    bn = BatchNorm2d(3, momentum=0.1)
    bn.use_running_average = False
    weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def loss(xx):
        fresh = BatchNorm2d(3, momentum=0.1)  # built inside the trace: its statistics may be updated
        fresh.use_running_average = False
        return jnp.sum(fresh(xx) * weights)

    y = bn(x)
    mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
    want = (x64 - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(np.asarray(y), want, rtol=0, atol=2e-3)
    n = x64.size // 3
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.var[...]), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-6)
    # d/dx of sum(w * xhat): (w - mean(w) - xhat * mean(w * xhat)) / sqrt(var + eps), per channel
    w64 = np.asarray(weights, np.float64)
    want_grad = (w64 - w64.mean((0, 1, 2)) - want * (w64 * want).mean((0, 1, 2))) / np.sqrt(var + 1e-5)
    grad = np.asarray(jax.grad(loss)(x))
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=2e-3 * np.abs(want_grad).max())
