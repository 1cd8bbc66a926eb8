"""Gleason 2019 (prostate TMA cores, about 5000x5000): 5 classes, overall metric frequency-weighted IoU.

Classes 0..4 from the challenge's grades 0 / 1 / 3 / 4 / 5 (background, benign, Gleason 3, 4, 5), as the
original MagNet's labels (`*_classimg_nonconvex.png`, written by `data/prepare_gleason.py` from the
pathologists' maps by majority vote). The original averages classes 1..4 and reports
`get_freq_iou` (IoU weighted by pixel frequency over classes 1..4; VinAIResearch/MagNet
magnet/utils/metrics.py at commit 0063361). Split: the original's 195 train / 49 val cores
(VinAIResearch/MagNet data/list/gleason at commit b8ebba7, removed later), shipped under
`data/list/gleason/`; no test split. Published MagNet numbers on Gleason: not found (see data/README.md).
"""

from __future__ import annotations

from magnet_jax.data.datasets.base import DatasetSpec

CLASSES = ("background", "benign", "gleason 3", "gleason 4", "gleason 5")
# The original's label2color (magnet/dataset/gleason.py): grey levels.
PALETTE = ((0, 0, 0), (50, 50, 50), (100, 100, 100), (150, 150, 150), (200, 200, 200))
# Raw grade in the pathologists' maps -> class id (the original's 0/1/3/4/5 -> 0..4). Values above 5 are
# annotation mistakes for benign (the correction published with an analysis of the public release).
GRADE_TO_CLASS = {0: 0, 1: 1, 3: 2, 4: 3, 5: 4}
STANDARD_LISTS = {
    "train": "f496632ca91b0559a542bf4e4ce1cb7a5f8beb3c816f06c69a6e3063f54d6a35",
    "val": "ac61ab987774b4622848dec1c774721d9f11dd80356befb083c089c2a7f939bc",
}
STANDARD_COUNTS = {"train": 195, "val": 49}

SPEC = DatasetSpec(
    name="gleason",
    description="Gleason 2019 TMA cores, 5 classes, frequency-weighted IoU over classes 1..4",
    download_hint=(
        "Gleason 2019 needs registration (https://gleason2019.grand-challenge.org): download the training "
        "images ('Train Imgs') and the six pathologists' maps (Maps1_T ... Maps6_T) into one folder, then run "
        "`python data/prepare_gleason.py --download <that folder> --root data/gleason` (fuses the maps by "
        "majority vote and lays out images/ and gt/ as the lists data/list/gleason/{train,val}.txt expect)."
    ),
    class_names=CLASSES,
    palette=PALETTE,
    miou_classes=(1, 2, 3, 4),
    metric="fwiou",
    label_format="train_ids",
    list_dir="data/list/gleason",
    standard_lists=STANDARD_LISTS,
    standard_split="the original MagNet's Gleason lists (VinAIResearch/MagNet data/list/gleason, commit b8ebba7)",
)
