"""Per-dataset facts: class names, number of classes, ignore label, classes averaged into the mIoU."""

from __future__ import annotations

import dataclasses

from magnet_jax.data.errors import DataError
from magnet_jax.data.labels import CITYSCAPES_CLASSES, DEEPGLOBE_CLASSES


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    class_names: tuple[str, ...]
    num_classes: int
    ignore_label: int
    miou_classes: tuple[int, ...]  # the classes averaged into the mIoU (DeepGlobe: 1..6)


def default_class_names(name: str) -> tuple[str, ...] | None:
    if name == "cityscapes":
        return CITYSCAPES_CLASSES
    if name == "deepglobe":
        return DEEPGLOBE_CLASSES
    if name == "synthetic":
        from magnet_jax.data.synthetic import CLASS_NAMES

        return CLASS_NAMES
    return None


def dataset_info(config) -> DatasetInfo:
    """Class names (config.data.class_names, else the dataset's), num_classes, ignore label, mIoU classes.

    mIoU classes: config.data.miou_classes ("1,2,3"); empty means all classes.
    """
    d = config.data
    n = int(d.num_classes)
    names_text = str(d.class_names or "").strip()
    if names_text:
        names = tuple(t.strip() for t in names_text.split(","))
    else:
        names = default_class_names(str(d.name)) or tuple(f"class_{i}" for i in range(n))
    if len(names) != n:
        raise DataError(
            f"config.data.num_classes is {n} but there are {len(names)} class names "
            f"({'config.data.class_names' if names_text else 'the defaults of dataset ' + repr(d.name)})"
        )
    miou_text = str(d.miou_classes or "").strip()
    try:
        miou = tuple(int(t) for t in miou_text.split(",") if t.strip()) if miou_text else tuple(range(n))
    except ValueError:
        raise DataError(f"config.data.miou_classes: expected comma-separated class ids, got {miou_text!r}") from None
    bad = [c for c in miou if not 0 <= c < n]
    if bad:
        raise DataError(f"config.data.miou_classes: classes {bad} are outside 0..{n - 1}")
    return DatasetInfo(str(d.name), names, n, int(d.ignore_label), miou)
