"""Cityscapes through tensorflow-datasets, end to end on fake zips built here (no network)."""

import zipfile

import numpy as np
import pytest
from helpers.fakes import cityscapes_files, write_cityscapes_zips

from magnet_jax.config import default_config
from magnet_jax.data import MissingDataError, build_source, make_train_loader
from magnet_jax.data.datasets.cityscapes import ID_TO_TRAIN_ID as CITYSCAPES_ID_TO_TRAIN_ID
from magnet_jax.data.sample_spec import LoaderSpec, RefinerPairSpec

pytest.importorskip("tensorflow_datasets")


def _config(tmp_path, manual):
    c = default_config()
    c.data.source = "tfds"
    c.data.tfds_data_dir = str(tmp_path / "tfds")
    c.data.tfds_manual_dir = str(manual)
    return c


def test_tfds_cityscapes_end_to_end(tmp_path):
    manual = tmp_path / "zips"
    write_cityscapes_zips(str(manual))  # TFDS fixes the size at 2048x1024
    c = _config(tmp_path, manual)
    train = build_source(c, "train")
    val = build_source(c, "val")
    assert len(train) == 2 and len(val) == 1 and len(build_source(c, "test")) == 1
    # The label of each sample is the zip's labelIds mapped to train ids.
    import cv2

    with zipfile.ZipFile(manual / "gtFine_trainvaltest.zip") as z:
        ids = {n.split("/")[-1].replace("_gtFine_labelIds.png", ""):
               cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_UNCHANGED) for n in z.namelist()}
    lut = np.full(256, 255, np.uint8)
    for k, v in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[k] = v
    for i in range(len(train)):
        sample = train[i]
        assert sample["image"].shape == (1024, 2048, 3) and sample["image"].dtype == np.uint8
        np.testing.assert_array_equal(sample["label"], lut[ids[sample["name"]]])
    expected = {rel.split("/")[-1][: -len("_leftImg8bit.png")] for rel, _, _, _ in cityscapes_files(1, 1)}
    assert {train[i]["name"] for i in range(2)} | {val[0]["name"]} <= expected
    # The same pipeline as file lists; reading again reuses the prepared dataset.
    c.magnet.scales = "256-128,512-256"
    loader = make_train_loader(RefinerPairSpec.from_config(c), LoaderSpec(batch_size=2, seed=0, num_epochs=1), train)
    batch = next(iter(loader))
    assert batch["fine_image"].shape == (2, 128, 256, 3) and batch["label"].shape == (2, 128, 256)
    assert len(build_source(_config(tmp_path, tmp_path / "gone"), "val")) == 1


def test_tfds_missing_zips(tmp_path):
    manual = tmp_path / "zips"
    manual.mkdir()
    (manual / "gtFine_trainvaltest.zip").write_bytes(b"")
    with pytest.raises(MissingDataError, match=r"1 Cityscapes zip\(s\) missing .*leftImg8bit_trainvaltest.zip") as e:
        build_source(_config(tmp_path, manual), "train")
    assert "Nothing is downloaded automatically" in str(e.value)
    with pytest.raises(MissingDataError, match="tfds_manual_dir .* does not exist"):
        build_source(_config(tmp_path, tmp_path / "nowhere"), "train")
