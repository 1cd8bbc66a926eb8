"""A custom dataset: file lists plus a colour or id table in the config, no code.

`config.data.{train,val,test}_list` (one `image<TAB>label` line each, relative to config.data.root),
`num_classes`, optional `class_names`, `miou_classes`, `metric`, and the label format: `color_table`
when config.data.color_table is set, else `id_table` when config.data.id_table is set, else `train_ids`
(or any format set explicitly). Palette: the colour table's colours, else a fixed default.
"""

from __future__ import annotations

from magnet_jax.data.datasets.base import DatasetSpec


def default_label_format(config) -> str:
    if str(config.data.color_table or "").strip():
        return "color_table"
    if str(config.data.id_table or "").strip():
        return "id_table"
    return "train_ids"


SPEC = DatasetSpec(
    name="custom",
    description="your own file lists with a colour or id table",
    download_hint=(
        "put your images and labels under config.data.root and write file lists with one "
        "`image<TAB>label` line per sample, paths relative to config.data.root (see data/README.md)."
    ),
    label_format="",  # from the tables the config gives (default_label_format)
)
