"""Datasets and input pipelines: the dataset registry (one file per dataset under `datasets/`), sources
(file lists, TFDS Cityscapes, synthetic), label decoding, MagNet training pairs, backbone samples,
evaluation samples, grain loaders.

    ds = dataset_spec(config)                                     # classes, palette, mIoU classes, metric
    ds.protocol("test")                                           # split, list file + sha256, classes, metric
    source = build_source(config, "train", workdir=workdir)      # source[i] -> image, label, name
    loader = make_train_loader(RefinerPairSpec.from_config(config), LoaderSpec(batch_size=8), source)
    it = iter(loader); batch = next(it); state = it.get_state()  # save with the checkpoint
    for sample in make_eval_iterator(EvalSampleSpec.from_config(config), source): ...  # (data/sample_spec.py)
"""

from magnet_jax.data.datasets import (
    DATASET_NAMES,
    DatasetSpec,
    ResolvedDataset,
    build_source,
    dataset_spec,
    get_spec,
    make_label_decoder,
)
from magnet_jax.data.errors import DataError, MissingDataError
from magnet_jax.data.lists import list_sha256, read_file_list, write_file_list
from magnet_jax.data.pipelines import make_eval_iterator, make_train_loader, sample_transform, steps_per_epoch
from magnet_jax.data.sources import FileListSource, Source
from magnet_jax.data.transforms import backbone_sample, eval_sample, patch_grid, refiner_pair, scale_patches

__all__ = [
    "DATASET_NAMES",
    "DataError",
    "DatasetSpec",
    "FileListSource",
    "MissingDataError",
    "ResolvedDataset",
    "Source",
    "backbone_sample",
    "build_source",
    "dataset_spec",
    "eval_sample",
    "get_spec",
    "list_sha256",
    "make_eval_iterator",
    "make_label_decoder",
    "make_train_loader",
    "patch_grid",
    "read_file_list",
    "refiner_pair",
    "sample_transform",
    "scale_patches",
    "steps_per_epoch",
    "write_file_list",
]
