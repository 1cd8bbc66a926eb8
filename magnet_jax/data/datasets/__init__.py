"""The dataset registry: one file per dataset (`DatasetSpec`), resolved against a config here.

    ds = dataset_spec(config)          # ResolvedDataset: classes, palette, mIoU classes, metric, protocol
    source = build_source(config, "val", workdir=workdir)
    decode = make_label_decoder(config)

A new dataset is one file declaring `SPEC` plus one line in `REGISTRY` (see CONTRIBUTING.md).
"""

from __future__ import annotations

from magnet_jax.data.datasets import cityscapes, custom, deepglobe, gleason, inria, synthetic
from magnet_jax.data.datasets.base import DatasetSpec, ResolvedDataset, default_palette
from magnet_jax.data.errors import NOTHING_DOWNLOADED, DataError, MissingDataError
from magnet_jax.data.labels import GENERIC_FORMATS, ColorLabelDecoder, IdLabelDecoder, generic_decoder
from magnet_jax.data.labels import parse_color_table as _parse_color_table
from magnet_jax.data.sources import SPLITS, Source, list_path_for
from magnet_jax.metrics import parse_metric

REGISTRY: dict[str, DatasetSpec] = {
    s.name: s for s in (cityscapes.SPEC, deepglobe.SPEC, gleason.SPEC, inria.SPEC, synthetic.SPEC, custom.SPEC)
}
DATASET_NAMES = tuple(REGISTRY)
SOURCE_KINDS = ("file_list", "tfds", "synthetic")
MAX_CLASSES = 255  # labels are uint8 images: ids 0..254 for classes, 255 free for the ignore label

__all__ = [
    "DATASET_NAMES",
    "REGISTRY",
    "DatasetSpec",
    "ResolvedDataset",
    "build_source",
    "dataset_spec",
    "download_hint",
    "get_spec",
    "label_formats",
    "make_label_decoder",
]


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset `name`; DataError naming config.data.name otherwise."""
    spec = REGISTRY.get(str(name))
    if spec is None:
        raise DataError(f"config.data.name: expected one of {', '.join(DATASET_NAMES)}, got {name!r}")
    return spec


def download_hint(name: str) -> str:
    """What to download for dataset `name` and where to put it (the custom dataset's hint for other names)."""
    return f"{REGISTRY.get(str(name), REGISTRY['custom']).download_hint} {NOTHING_DOWNLOADED}"


def label_formats() -> tuple[str, ...]:
    """Every label format: the datasets' own, then the generic ones."""
    own = [f for spec in REGISTRY.values() for f in spec.label_formats]
    return tuple(own) + GENERIC_FORMATS


def _label_format(config, spec: DatasetSpec) -> str:
    fmt = str(config.data.label_format or "").strip()
    return fmt or spec.label_format or custom.default_label_format(config)


def make_label_decoder(config) -> IdLabelDecoder | ColorLabelDecoder:
    """The decoder of `config.data.label_format` (empty: the dataset's default format)."""
    fmt = _label_format(config, get_spec(config.data.name))
    for spec in REGISTRY.values():
        if fmt in spec.label_formats:
            return spec.label_formats[fmt](config)
    if fmt in GENERIC_FORMATS:
        return generic_decoder(config, fmt)
    raise DataError(f"config.data.label_format: expected one of {', '.join(label_formats())}, got {fmt!r}")


def _int_list(text: str, field: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise DataError(f"{field}: expected comma-separated class ids, got {text!r}") from None


def _palette(config, spec: DatasetSpec, n: int):
    import numpy as np

    pal = default_palette(n)
    if spec.palette:
        own = np.asarray(spec.palette, np.uint8)[:n]
        pal[: len(own)] = own
    elif _label_format(config, spec) == "color_table" and str(config.data.color_table or "").strip():
        colors, classes = _parse_color_table(str(config.data.color_table))
        for color, cls in zip(colors, classes, strict=True):
            if 0 <= cls < n:
                pal[cls] = color
    pal.setflags(write=False)
    return pal


def dataset_spec(config) -> ResolvedDataset:
    """The config's dataset, checked: class names (config.data.class_names, else the dataset's), num_classes
    (1..255: uint8 labels), mIoU classes (config.data.miou_classes, else the dataset's: DeepGlobe 1..6,
    Gleason 1..4, others all), the overall metric (config.data.metric, else the dataset's), palette, label
    format, source and list files. Every inconsistency is a one-line DataError naming the field."""
    d = config.data
    spec = get_spec(d.name)
    n = int(d.num_classes)
    if not 1 <= n <= MAX_CLASSES:
        raise DataError(
            f"config.data.num_classes is {n}: expected 1..{MAX_CLASSES} (labels are uint8 images, so class ids "
            f"0..254 and 255 for the ignore label)"
        )
    names_text = str(d.get("class_names", "") or "").strip()
    if names_text:
        names = tuple(t.strip() for t in names_text.split(","))
    else:
        names = spec.class_names or tuple(f"class_{i}" for i in range(n))
    if len(names) != n:
        where = "config.data.class_names" if names_text else f"the classes of dataset {spec.name!r}"
        raise DataError(f"config.data.num_classes is {n} but there are {len(names)} class names ({where})")
    miou_text = str(d.get("miou_classes", "") or "").strip()
    if miou_text:
        miou = _int_list(miou_text, "config.data.miou_classes")
    else:
        miou = spec.miou_classes if spec.miou_classes is not None else tuple(range(n))
    bad = [c for c in miou if not 0 <= c < n]
    if bad or not miou:
        raise DataError(f"config.data.miou_classes: classes {bad or '(none)'} are outside 0..{n - 1}")
    metric = str(d.metric or "").strip() or spec.metric
    try:
        parse_metric(metric, n)
    except ValueError as e:
        raise DataError(str(e)) from None
    kind = str(d.get("source", "file_list"))
    if kind not in SOURCE_KINDS:
        raise DataError(f"config.data.source: expected 'file_list', 'tfds' or 'synthetic', got {kind!r}")
    if kind == "synthetic":
        synthetic.check_num_classes(n)
    ignore = d.get("ignore_label", None)
    ignore = None if ignore is None or int(ignore) < 0 else int(ignore)
    lists = tuple((s, list_path_for(config, s)) for s in SPLITS) if kind == "file_list" else ()
    if kind == "synthetic" and (root := synthetic.folder_for(config)):
        lists = tuple((s, f"{root.rstrip('/')}/{s}.txt") for s in SPLITS)
    return ResolvedDataset(
        name=spec.name, num_classes=n, class_names=names, palette=_palette(config, spec, n), miou_classes=miou,
        ignore_label=ignore, metric=metric, label_format=_label_format(config, spec), source=kind, lists=lists,
        standard_lists=tuple(spec.standard_lists.items()), standard_split=spec.standard_split,
        train_to_label_id=spec.train_to_label_id if n == len(spec.train_to_label_id) else (),
        absent_classes=spec.absent_classes,
    )


def build_source(config, split: str, *, workdir: str | None = None, root: str | None = None,
                 validate: int = 1) -> Source:
    """The source of `split` (train | val | test): the dataset's builder for `config.data.source`.

    - "file_list" (every dataset): `config.data.{split}_list` read relative to `root` (default
      `config.data.root`), labels decoded by `config.data.label_format` (empty: the dataset's format).
    - "tfds" (Cityscapes): TFDS cityscapes/semantic_segmentation, prepared on first use from the zips in
      `config.data.tfds_manual_dir` into `config.data.tfds_data_dir`.
    - "synthetic" (synthetic): generated once into `root`, else `config.data.root`, else
      `<workdir>/synthetic_data`, then read through its file lists `<folder>/{split}.txt`.

    Every listed file's existence is checked, and the first `validate` samples are read and decoded,
    so a broken dataset fails here, before any work starts; missing data is a MissingDataError that ends
    with what to download (`download_hint`).
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    ds = dataset_spec(config)
    spec = REGISTRY[ds.name]
    builder = spec.sources.get(ds.source)
    if builder is None:
        raise DataError(
            f"config.data.source {ds.source!r} is not available for dataset {ds.name!r} (config.data.name); "
            f"it has: {', '.join(spec.sources)}"
        )
    decoder = make_label_decoder(config) if ds.source != "synthetic" else None
    try:
        source = builder(config, split, root=root, workdir=workdir, decoder=decoder)
    except MissingDataError as e:  # the sources name what is missing; the dataset knows what to download
        raise MissingDataError(f"{e} {download_hint(ds.name)}") from None
    source.validate(range(min(int(validate), len(source))))
    return source
