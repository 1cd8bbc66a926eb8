"""The .pth converter (magnet_jax.convert) and weights checkpoints (magnet_jax.weights).

Checkpoints are written here with torch.save from the synthetic weights of the parity
fixtures, exactly as the original's scripts write them: backbones as the training
wrapper's state dict (`model.` prefix + `loss.criterion.weight`), refiners as plain
state dicts. Outputs are compared with the original's (the parity fixtures' `modules/`).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magnet_jax.convert import load_torch_checkpoint, main  # imports torch only when reading a .pth
from magnet_jax.models import build_model
from magnet_jax.models.state_dict import StateDictMismatchError, load_state_dict
from magnet_jax.weights import (
    CheckpointError,
    load_model_weights,
    load_refiners,
    read_weights_metadata,
    save_model_weights,
)

try:
    import torch
except ImportError:  # the weights-checkpoint tests below run without it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not installed (needed to write .pth files)")


def torch_test(f):
    """Marks a test `torch` and skips it without PyTorch."""
    return pytest.mark.torch(needs_torch(f))


REPO = Path(__file__).resolve().parents[1]


def nhwc(a: np.ndarray) -> np.ndarray:
    return np.transpose(a, (0, 2, 3, 1))


def save_pth(state: dict[str, np.ndarray], path: Path, *, wrapper: bool = False) -> Path:
    """torch.save a state dict; `wrapper` writes it as the original's backbone training wrapper."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    if wrapper:
        tensors = {f"model.{k}": v for k, v in tensors.items()}
        tensors["loss.criterion.weight"] = torch.ones(3)
    torch.save(tensors, path)
    return path


def require_model(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        pytest.skip(f"{module} not available yet ({e})")


def assert_close_to_original(out, ref: np.ndarray) -> None:
    out = np.asarray(out)
    assert out.shape == ref.shape
    err = float(np.abs(out - ref).max())
    assert err <= 1e-3 * float(np.abs(ref).max()), f"max abs error {err} vs max|logits| {np.abs(ref).max()}"


@pytest.fixture(scope="module")
def refine_sd(synth_state_dict):
    return synth_state_dict("refine_19")


@pytest.fixture(scope="module")
def refine_pth(refine_sd, tmp_path_factory) -> Path:
    if torch is None:
        pytest.skip("PyTorch not installed (needed to write .pth files)")
    return save_pth(refine_sd, tmp_path_factory.mktemp("pth") / "refine_19.pth")


@pytest.fixture(scope="module")
def refine_io(parity_dir):
    d = np.load(parity_dir / "modules" / "refine_19.npz")
    return nhwc(d["fine"]), nhwc(d["coarse"]), nhwc(d["logits"])


@pytest.fixture(scope="module")
def refiner(refine_pth):
    return load_torch_checkpoint(refine_pth, "refinement", 19)


@pytest.fixture(scope="module")
def refiner_np(refine_sd):
    """The same refiner, loaded without PyTorch (for the weights-checkpoint tests)."""
    model = build_model("refinement", 19)
    load_state_dict(model, refine_sd, source="synthetic refine_19")
    return model


# ------------------------------------------------------------------ parity through real .pth files


@torch_test
def test_refiner_pth_matches_original(refiner, refine_io):
    fine, coarse, ref = refine_io
    assert_close_to_original(refiner(fine, coarse), ref)


@torch_test
def test_fpn_wrapper_pth_matches_original(synth_state_dict, parity_dir, tmp_path):
    require_model("magnet_jax.models.fpn")
    path = save_pth(synth_state_dict("fpn_7"), tmp_path / "fpn_7.pth", wrapper=True)
    d = np.load(parity_dir / "modules" / "fpn_7.npz")
    model = load_model_weights(path, "fpn", 7)  # a .pth through the generic entry point
    assert_close_to_original(model(nhwc(d["input"])), nhwc(d["logits"]))


@pytest.mark.slow
@torch_test
def test_hrnet18_ocr_wrapper_pth_matches_original(synth_state_dict, parity_dir, tmp_path):
    require_model("magnet_jax.models.hrnet_ocr")
    path = save_pth(synth_state_dict("hrnet18_ocr_19"), tmp_path / "hrnet18.pth", wrapper=True)
    d = np.load(parity_dir / "modules" / "hrnet18_ocr_19.npz")
    model = load_torch_checkpoint(path, "hrnet18+ocr", 19)
    assert_close_to_original(model(nhwc(d["input"])), nhwc(d["logits"]))


@torch_test
def test_training_checkpoint_and_dataparallel_layouts(refine_sd, refiner, refine_io, tmp_path):
    """{"state_dict": ...} full checkpoints and `module.` (DataParallel) prefixes load too."""
    fine, coarse, _ = refine_io
    tensors = {f"module.{k}": torch.from_numpy(v) for k, v in refine_sd.items()}
    torch.save({"epoch": 3, "best_mIoU": 0.5, "state_dict": tensors}, tmp_path / "full.pth.tar")
    model = load_torch_checkpoint(tmp_path / "full.pth.tar", "refinement", 19)
    np.testing.assert_array_equal(np.asarray(model(fine, coarse)), np.asarray(refiner(fine, coarse)))


# ------------------------------------------------------------------ CLI and orbax round trip


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "magnet_jax.convert", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_help():
    res = _run_cli("--help")
    assert res.returncode == 0, res.stderr
    for word in ("--model", "--num-classes", "--overwrite", "IN.pth", "OUT_DIR", "refinement", "hrnet18+ocr"):
        assert word in res.stdout


@torch_test
def test_cli_round_trip(refine_pth, refiner, refine_io, tmp_path):
    out = tmp_path / "refine_19"
    res = _run_cli("--model", "refinement", "--num-classes", "19", str(refine_pth), str(out))
    assert res.returncode == 0, res.stderr
    meta = read_weights_metadata(out)
    assert (meta["model"], meta["num_classes"]) == ("refinement", 19)
    assert meta["source"].endswith("refine_19.pth")
    assert not [p for p in tmp_path.iterdir() if p.name != "refine_19"], "temporary folders left behind"
    fine, coarse, _ = refine_io
    loaded = load_model_weights(out, "refinement", 19)
    np.testing.assert_array_equal(np.asarray(loaded(fine, coarse)), np.asarray(refiner(fine, coarse)))


@torch_test
def test_cli_refuses_existing_output_unless_overwrite(refine_pth, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    argv = ["--model", "refinement", "--num-classes", "19", str(refine_pth), str(out)]
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 1  # not a weights checkpoint: never clobbered
    assert "not a magnet-jax weights checkpoint" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    (out / "keep.txt").unlink()
    assert main([*argv, "--overwrite"]) == 0  # an empty folder may be replaced
    assert main([*argv, "--overwrite"]) == 0  # and so may an earlier weights checkpoint
    assert read_weights_metadata(out)["num_classes"] == 19
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_error_exit(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert main(["--model", "refinement", "--num-classes", "19", str(missing), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ error paths of the .pth reader


def test_missing_file(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_torch_checkpoint(path, "refinement", 19)
    with pytest.raises(FileNotFoundError, match="absent.pth.*refinement"):
        load_model_weights(path, "refinement", 19)


@torch_test
def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as e:
        load_torch_checkpoint(path, "refinement", 19)
    assert str(path) in str(e.value) and "weights_only=True" in str(e.value)

    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="list.pth holds list; expected a state dict"):
        load_torch_checkpoint(tmp_path / "list.pth", "refinement", 19)

    torch.save({"a.weight": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"mixed.pth is not a state dict: 1 entry is not tensors \(epoch\)"):
        load_torch_checkpoint(tmp_path / "mixed.pth", "refinement", 19)


class _Payload:
    """Unpickling this would run code (creates a marker file): weights_only must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@torch_test
def test_never_unpickles_arbitrary_objects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"w": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="evil.pth is not a PyTorch checkpoint that loads with"):
        load_torch_checkpoint(path, "refinement", 19)
    assert not marker.exists()


@torch_test
def test_wrong_model_name(refine_pth):
    with pytest.raises(ValueError, match="refine_19.pth: unknown model 'unet'; expected one of fpn, psp"):
        load_torch_checkpoint(refine_pth, "unet", 19)


@torch_test
def test_wrong_model(refine_pth):
    require_model("magnet_jax.models.fpn")
    with pytest.raises(StateDictMismatchError) as e:
        load_torch_checkpoint(refine_pth, "fpn", 19)
    msg = str(e.value)
    assert str(refine_pth) in msg and "model 'fpn'" in msg
    assert "missing key(s)" in msg and "resnet_backbone.conv1.weight" in msg
    assert "unexpected key(s)" in msg and "bn0.weight" in msg
    assert "look like model refinement" in msg


@torch_test
def test_wrong_num_classes(refine_pth):
    with pytest.raises(StateDictMismatchError) as e:
        load_torch_checkpoint(refine_pth, "refinement", 7)
    msg = str(e.value)
    assert str(refine_pth) in msg and "num_classes=7" in msg
    assert "misshaped key(s)" in msg
    assert "seg_conv.weight: checkpoint (19, 128, 1, 1), model (7, 128, 1, 1)" in msg
    assert "bn0.weight: checkpoint (38,), model (14,)" in msg
    assert "missing" not in msg and "unexpected" not in msg
    assert "another num_classes" in msg


@torch_test
def test_missing_and_unexpected_keys(refine_sd, tmp_path):
    state = dict(refine_sd)
    del state["residual.1.conv2.weight"], state["bn1.running_var"]
    state["extra.weight"] = np.zeros(3, np.float32)
    path = save_pth(state, tmp_path / "partial.pth")
    with pytest.raises(StateDictMismatchError) as e:
        load_torch_checkpoint(path, "refinement", 19)
    msg = str(e.value)
    assert str(path) in msg
    assert "2 missing key(s): bn1.running_var, residual.1.conv2.weight" in msg
    assert "1 unexpected key(s): extra.weight" in msg


@torch_test
def test_backbone_wrapper_keys_missing(synth_state_dict, tmp_path):
    """A wrapper file whose loss entry is kept but a model key is lost is refused, naming the key."""
    require_model("magnet_jax.models.fpn")
    state = synth_state_dict("fpn_7")
    del state["classify.bias"]
    path = save_pth(state, tmp_path / "fpn_partial.pth", wrapper=True)
    with pytest.raises(StateDictMismatchError, match=r"1 missing key\(s\): classify.bias"):
        load_torch_checkpoint(path, "fpn", 7)


# ------------------------------------------------------------------ weights checkpoints (orbax)


@pytest.fixture(scope="module")
def refine_ckpt(refiner_np, tmp_path_factory) -> Path:
    return save_model_weights(
        refiner_np, tmp_path_factory.mktemp("ckpt") / "refine", model_name="refinement", num_classes=19
    )


def test_weights_checkpoint_round_trip(refine_ckpt, refiner_np, refine_io):
    meta = read_weights_metadata(refine_ckpt)
    assert (meta["format"], meta["model"], meta["num_classes"]) == ("magnet-jax-weights", "refinement", 19)
    fine, coarse, ref = refine_io
    loaded = load_model_weights(refine_ckpt, "refinement", 19)
    out = np.asarray(loaded(fine, coarse))
    np.testing.assert_array_equal(out, np.asarray(refiner_np(fine, coarse)))
    assert_close_to_original(out, ref)


def test_save_refuses_existing_folder(refiner_np, refine_ckpt, tmp_path):
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        save_model_weights(refiner_np, refine_ckpt, model_name="refinement", num_classes=19)
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_model_weights(refiner_np, tmp_path / "f", model_name="refinement", num_classes=19, overwrite=True)


def test_orbax_wrong_model_or_num_classes(refine_ckpt):
    with pytest.raises(CheckpointError) as e:
        load_model_weights(refine_ckpt, "refinement", 7)
    msg = str(e.value)
    assert str(refine_ckpt) in msg and "model 'refinement' with num_classes=19" in msg
    assert "expected model 'refinement' with num_classes=7" in msg
    with pytest.raises(CheckpointError, match="expected model 'fpn' with num_classes=19"):
        load_model_weights(refine_ckpt, "fpn", 19)
    with pytest.raises(ValueError, match="unknown model 'unet'"):
        load_model_weights(refine_ckpt, "unet", 19)


def test_orbax_misshaped_arrays_named(tmp_path):
    """Metadata that lies about the arrays is caught by the strict array check."""
    out = save_model_weights(build_model("refinement", 7), tmp_path / "r7", model_name="refinement", num_classes=7)
    meta_file = out / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["num_classes"] = 19
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StateDictMismatchError) as e:
        load_model_weights(out, "refinement", 19)
    msg = str(e.value)
    assert str(out) in msg and "misshaped array(s)" in msg
    assert "seg_conv.kernel: checkpoint (1, 1, 128, 7), model (1, 1, 128, 19)" in msg


def test_save_checks_model_against_name(refiner_np, tmp_path):
    with pytest.raises(StateDictMismatchError, match="model 'refinement' with num_classes=7"):
        save_model_weights(refiner_np, tmp_path / "x", model_name="refinement", num_classes=7)
    assert not (tmp_path / "x").exists()


def test_folder_that_is_not_a_weights_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=f"{tmp_path} is not a magnet-jax weights checkpoint"):
        load_model_weights(tmp_path, "refinement", 19)


@torch_test
def test_load_refiners(refine_ckpt, refine_pth):
    shared = load_refiners(str(refine_ckpt), 19, 3, refiner="refinement")
    assert len(shared) == 3 and shared[0] is shared[1] is shared[2]
    per_stage = load_refiners(f"{refine_ckpt},{refine_pth}", 19, 2, refiner="refinement")
    assert len(per_stage) == 2 and per_stage[0] is not per_stage[1]
    with pytest.raises(ValueError, match="lists 2 checkpoints.*expected 1 \\(shared\\) or 3"):
        load_refiners(f"{refine_ckpt},{refine_pth}", 19, 3, refiner="refinement")
