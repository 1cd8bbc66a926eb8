"""DeepGlobe 2018 land cover (aerial, 2448x2448): 7 classes from RGB masks, mIoU over classes 1..6.

Standard split (GLNet's, used by MagNet, FCtL, ISDNet, ...): 454 train / 207 val / 142 test, all 803
images of land-train: the original's `data/list/deepglobe/{train,val,test}.txt` (VinAIResearch/MagNet,
commit 9a855ee), shipped byte for byte under `data/list/deepglobe/` (its train.txt has no final newline).
Published MagNet (VinAIResearch/MagNet README, ResNet50-FPN, test split): baseline 67.22, MagNet 72.10,
MagNet-Fast 68.22 mIoU.
"""

from __future__ import annotations

from magnet_jax.data.datasets.base import DatasetSpec
from magnet_jax.data.labels import ColorLabelDecoder

COLORS = (
    (0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255),
)  # fmt: skip
CLASSES = ("unknown", "urban", "agriculture", "rangeland", "forest", "water", "barren")
STANDARD_LISTS = {
    "train": "f6641996fa0fa633d14083073eaf01eba7579de8ae45e5ed8ff3ccf22817edd3",
    "val": "c6b46e2bf4fdaf0ec0ae0b752f0309b6ce553a7eec19bcd5f1002b9081a173cd",
    "test": "d3a2d41d49cac4df4de7c1f8f5d8cdb4bf1d4e530e20293eb04e30bc81a37875",
}
STANDARD_COUNTS = {"train": 454, "val": 207, "test": 142}


def rgb_decoder(config) -> ColorLabelDecoder:
    return ColorLabelDecoder(
        list(COLORS), list(range(7)), binarize=bool(config.data.binarize_masks), name="DeepGlobe colour table",
        hint="DeepGlobe masks saved with lossy compression need config.data.binarize_masks=True "
        "(the challenge's convention: threshold each channel at 128).",
    )


SPEC = DatasetSpec(
    name="deepglobe",
    description="DeepGlobe land cover, 7 classes (class 0 unknown not averaged), GLNet/MagNet split",
    download_hint=(
        "DeepGlobe land cover needs registration: download the land-train data (land-train.zip, 803 images "
        "2448x2448 with RGB masks) of the DeepGlobe 2018 Land Cover challenge into data/, then run "
        "`python data/prepare_deepglobe.py --zip data/land-train.zip --root data/deepglobe` (unzips and checks "
        "every image of the standard lists data/list/deepglobe/{train,val,test}.txt)."
    ),
    class_names=CLASSES,
    palette=COLORS,
    miou_classes=(1, 2, 3, 4, 5, 6),
    metric="miou",
    label_format="deepglobe_rgb",
    label_formats={"deepglobe_rgb": rgb_decoder},
    list_dir="data/list/deepglobe",
    standard_lists=STANDARD_LISTS,
    standard_split="GLNet/MagNet split (VinAIResearch/MagNet data/list/deepglobe)",
)
