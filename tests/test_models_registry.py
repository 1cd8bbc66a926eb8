"""The model registry by kind (backbones, refiners) and `config.model.refiner` selecting the refiner."""

from __future__ import annotations

import pytest

from magnet_jax.commands.checks import check_config
from magnet_jax.config import default_config
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.models import (
    BACKBONE,
    BACKBONE_NAMES,
    MODEL_NAMES,
    REFINER,
    REFINER_NAMES,
    build_model,
    check_model_name,
    model_kind,
)
from magnet_jax.models.refinement import RefinementMagNet
from magnet_jax.weights import load_refiners, save_model_weights, weights_tree

BACKBONES = "fpn, psp, hrnet18+ocr, hrnet48+ocr, small"


def test_names_by_kind():
    assert BACKBONE_NAMES == ("fpn", "psp", "hrnet18+ocr", "hrnet48+ocr", "small")
    assert REFINER_NAMES == ("refinement",)
    assert set(MODEL_NAMES) == set(BACKBONE_NAMES) | set(REFINER_NAMES)
    assert [model_kind(n) for n in ("fpn", "small", "refinement")] == [BACKBONE, BACKBONE, REFINER]
    with pytest.raises(ValueError, match="unknown model 'unet'; expected one of fpn, psp"):
        model_kind("unet")


def test_check_model_name_messages():
    check_model_name("psp", BACKBONE, "config.model.backbone")
    check_model_name("refinement", REFINER, "config.model.refiner")
    with pytest.raises(ValueError) as e:
        check_model_name("refinement", BACKBONE, "config.model.backbone")
    assert str(e.value) == f"config.model.backbone: 'refinement' is a refiner; expected a backbone: {BACKBONES}"
    with pytest.raises(ValueError) as e:
        check_model_name("fpn", REFINER, "config.model.refiner")
    assert str(e.value) == "config.model.refiner: 'fpn' is a backbone; expected a refiner: refinement"
    with pytest.raises(ValueError) as e:
        check_model_name("unet", BACKBONE, "config.model.backbone")
    assert str(e.value) == f"config.model.backbone: unknown model 'unet'; expected a backbone: {BACKBONES}"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "backbone",
            "refinement",
            f"config.model.backbone: 'refinement' is a refiner; expected a backbone: {BACKBONES}",
        ),
        ("refiner", "hrnet18+ocr", "config.model.refiner: 'hrnet18+ocr' is a backbone; expected a refiner: refinement"),
        ("refiner", "", "config.model.refiner: unknown model ''; expected a refiner: refinement"),
    ],
)
def test_config_check_refuses_the_wrong_kind(field, value, message):
    config = default_config()
    assert config.model.refiner == "refinement"
    check_config(config, "predict")
    config.model[field] = value
    with pytest.raises(ValueError) as e:
        check_config(config, "predict")
    assert str(e.value) == message and "\n" not in str(e.value)


def test_load_refiners_takes_the_refiner_name():
    # The name is checked before any file is read: a backbone name never loads as a refiner.
    with pytest.raises(ValueError, match="config.model.refiner: 'fpn' is a backbone; expected a refiner"):
        load_refiners("does/not/matter", 7, 2, refiner="fpn")


def _small_config(refiner_path: str, refiner: str):
    config = default_config()
    config.data.num_classes = 7
    config.model.backbone = "small"
    config.model.refiner = refiner
    config.magnet.scales = "64-64,128-128"
    config.magnet.crop_size = config.magnet.input_size = "64-64"
    config.checkpoint.refiners = refiner_path
    return config


def test_from_config_loads_config_model_refiner(tmp_path):
    saved = build_model("refinement", 7, seed=3)
    path = save_model_weights(saved, tmp_path / "ref", model_name="refinement", num_classes=7)
    backbone = build_model("small", 7)
    predictor = MagNetPredictor.from_config(_small_config(str(path), "refinement"), backbone=backbone)
    assert len(predictor.refiners) == 1 and isinstance(predictor.refiners[0], RefinementMagNet)
    want = weights_tree(saved)["seg_conv"]["kernel"]
    got = weights_tree(predictor.refiners[0])["seg_conv"]["kernel"]
    assert float(abs(got - want).max()) == 0.0 and float(abs(want).max()) > 0.0
    with pytest.raises(ValueError, match="config.model.refiner: 'psp' is a backbone; expected a refiner: refinement"):
        MagNetPredictor.from_config(_small_config(str(path), "psp"), backbone=backbone)
