"""Cityscapes (urban scenes, 2048x1024): 19 train ids, ignore 255, mIoU over all 19 classes.

Splits: the official train / val / test folders (2975 / 500 / 1525 images), listed by
`data/prepare_cityscapes.py` or read through TFDS (`config.data.source = "tfds"`).
Published MagNet (VinAIResearch/MagNet README, HRNetW18+OCR): baseline 63.24, MagNet 68.20, MagNet-Fast 67.37 mIoU.
"""

from __future__ import annotations

from magnet_jax.data.datasets.base import DatasetSpec, file_list_source
from magnet_jax.data.labels import IdLabelDecoder

# gtFine labelIds -> the 19 train ids (everything else -> ignore).
ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def label_ids_decoder(config) -> IdLabelDecoder:
    return IdLabelDecoder(ID_TO_TRAIN_ID, int(config.data.ignore_label), name="Cityscapes labelIds table")


def tfds_source(config, split: str, *, root, workdir, decoder):
    """TFDS cityscapes/semantic_segmentation (see `tfds_cityscapes.py`)."""
    del root, workdir
    from magnet_jax.data.tfds_cityscapes import TfdsCityscapesSource

    return TfdsCityscapesSource.from_config(config, split, decoder)


SPEC = DatasetSpec(
    name="cityscapes",
    description="Cityscapes fine annotations, 19 classes, official train/val/test",
    download_hint=(
        "Cityscapes needs registration: download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        "https://www.cityscapes-dataset.com/downloads/ into data/, then run "
        "`python data/prepare_cityscapes.py --zips data --root data/cityscapes` (unzips and writes "
        "data/list/cityscapes/{train,val,test}.txt). For the TFDS source put the two zips in "
        "config.data.tfds_manual_dir instead."
    ),
    class_names=CLASSES,
    palette=PALETTE,
    metric="miou",
    label_format="cityscapes_label_ids",
    label_formats={"cityscapes_label_ids": label_ids_decoder},
    sources={"file_list": file_list_source, "tfds": tfds_source},
    standard_split="the official Cityscapes train/val/test folders",
    train_to_label_id=tuple(sorted(ID_TO_TRAIN_ID, key=ID_TO_TRAIN_ID.get)),  # the scorer reads labelIds
    absent_classes="skip",  # cityscapesscripts: IoU NaN for a class absent from both, left out of the mean
)
