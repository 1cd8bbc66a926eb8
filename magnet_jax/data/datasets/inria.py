"""Inria Aerial Image Labeling (5000x5000 aerial tiles): building vs background, 0/255 masks.

The field (GLNet, FCtL, ISDNet, ...) reports the building class's IoU under the name "mIoU" (FCtL's
utils/metrics.py: the mean of iou[1:] over two classes); here the overall metric says so explicitly:
`iou_class:1`, while the mIoU row averages both classes. Split: FCtL's (liqiokkk/FCtL
txt_1/{train,crossvali,test}.txt: 126 / 27 / 27 of the 180 training tiles), shipped under
`data/list/inria/` as AerialImageDataset/train/{images,gt}/<tile>.tif pairs.
"""

from __future__ import annotations

from magnet_jax.data.datasets.base import DatasetSpec

CLASSES = ("background", "building")
PALETTE = ((0, 0, 0), (255, 255, 255))
STANDARD_LISTS = {
    "train": "a659c34a8156602f2ca83f9259a4c84e8da3895506044d5760066407a6b3a486",
    "val": "c0dbd3c2226fb16c3c0ce686f21b104acd02dc3b6ea5c1bf6e545c0e7d12a83c",
    "test": "3b5b2852b68ce70b4bd2d0e723ecb04b69885fe5ff114d6ba59a456080d437c2",
}
STANDARD_COUNTS = {"train": 126, "val": 27, "test": 27}

SPEC = DatasetSpec(
    name="inria",
    description="Inria Aerial, building vs background, overall metric = building IoU",
    download_hint=(
        "Inria Aerial needs registration (https://project.inria.fr/aerialimagelabeling/): download the "
        "dataset (AerialImageDataset, 180 training tiles 5000x5000 with 0/255 masks) into data/, then run "
        "`python data/prepare_inria.py --zip data/NEW2-AerialImageDataset.zip --root data/inria` (or --root "
        "alone when AerialImageDataset/ is already there): checks every tile of data/list/inria/*.txt."
    ),
    class_names=CLASSES,
    palette=PALETTE,
    metric="iou_class:1",
    label_format="mask_0_255",
    list_dir="data/list/inria",
    standard_lists=STANDARD_LISTS,
    standard_split="FCtL's split (liqiokkk/FCtL txt_1: train / crossvali / test)",
)
