"""The generated synthetic dataset (`magnet_jax/data/synthetic.py`): 5 classes, mIoU over all.

Generated on first use into `config.data.root`, else `<workdir>/synthetic_data`, then read through its
own file lists `<folder>/{train,val,test}.txt`.
"""

from __future__ import annotations

import os

from magnet_jax.data import synthetic, synthetic_folder
from magnet_jax.data.datasets.base import DatasetSpec
from magnet_jax.data.errors import DataError
from magnet_jax.data.lists import read_file_list
from magnet_jax.data.sources import FileListSource, Source


def folder_for(config, root: str | None = None, workdir: str | None = None) -> str:
    """Where the dataset lives: `root`, else config.data.root, else <workdir>/synthetic_data ("" if none)."""
    return root or str(config.data.root or "") or (os.path.join(workdir, "synthetic_data") if workdir else "")


def check_num_classes(num_classes: int) -> None:
    """The generated labels hold exactly `synthetic.NUM_CLASSES` classes (a config check, before generation)."""
    if num_classes != synthetic.NUM_CLASSES:
        raise DataError(
            f"config.data.num_classes is {num_classes} but the synthetic dataset has {synthetic.NUM_CLASSES} classes"
        )


def synthetic_source(config, split: str, *, root, workdir, decoder) -> Source:
    """Generates the dataset once (same parameters: reused), then reads `<folder>/<split>.txt`."""
    del decoder  # the generated labels are class ids with ignore 255, whatever config.data says
    folder = folder_for(config, root, workdir)
    if not folder:
        raise DataError(
            "the synthetic dataset needs a folder: set config.data.root or pass workdir "
            "(it is generated into <workdir>/synthetic_data)"
        )
    check_num_classes(int(config.data.num_classes))
    synthetic_folder.ensure_dataset(folder, config.data.synthetic)
    pairs = read_file_list(os.path.join(folder, f"{split}.txt"), folder)
    return FileListSource(pairs, synthetic.label_decoder())


SPEC = DatasetSpec(
    name="synthetic",
    description="generated demo data: 2-px textures and halo-only shapes, 5 classes",
    download_hint=(
        "the synthetic dataset is generated on first use into <workdir>/synthetic_data (or config.data.root); "
        "delete that folder to regenerate it."
    ),
    class_names=synthetic.CLASS_NAMES,
    palette=synthetic.PALETTE,
    metric="miou",
    label_format="train_ids",
    sources={"synthetic": synthetic_source},
)
