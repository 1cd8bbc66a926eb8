"""What the loaders make of each record, and how they batch it: frozen specs, each field checked once.

`data.pipelines` takes these specs, never the ConfigDict. The commands build them once (the `from_config`
constructors here read `config.magnet.*`, `config.train.backbone_*`, `config.data.*` and `config.seed`),
or a caller builds them from plain values. A bad field is a ValueError naming the config field it comes
from (`magnet_jax.field_checks`). Sizes are (W, H).
"""

from __future__ import annotations

import dataclasses

from magnet_jax.config import parse_size, parse_sizes
from magnet_jax.field_checks import check_at_least, check_ignore_label, check_num_workers, check_scales, check_size

Size = tuple[int, int]


def _sizes(values, field: str) -> tuple[Size, ...]:
    return tuple(check_size(v, field) for v in values)


@dataclasses.dataclass(frozen=True)
class RefinerPairSpec:
    """Refiner training pairs (`transforms.refiner_pair`): the fine scale is drawn from `scales[1:]`;
    a `crop_wh` crop of it and the whole image are resized to `input_wh`. A backbone trained on MagNet's
    own views (`train.backbone_sampling=scales`) uses the fine view of these pairs."""

    scales: tuple[Size, ...]  # the coarse scale first (a per-stage refiner: (coarse, its own))
    crop_wh: Size
    input_wh: Size

    def __post_init__(self):
        object.__setattr__(self, "scales", _sizes(self.scales, "magnet.scales"))
        object.__setattr__(self, "crop_wh", check_size(self.crop_wh, "magnet.crop_size"))
        object.__setattr__(self, "input_wh", check_size(self.input_wh, "magnet.input_size"))
        check_scales(self.scales, self.crop_wh, increasing=False)  # the backbone's views repeat the coarse one

    @classmethod
    def from_config(cls, config, scales: tuple[Size, ...] | None = None) -> RefinerPairSpec:
        """`config.magnet.scales` / `crop_size` / `input_size`; `scales` replaces the first (a run's own)."""
        m = config.magnet
        return cls(tuple(scales) if scales is not None else tuple(parse_sizes(m.scales, "magnet.scales")),
                   parse_size(m.crop_size, "magnet.crop_size"), parse_size(m.input_size, "magnet.input_size"))


def parse_jitter(text: str) -> tuple[float, float] | None:
    """`config.train.backbone_scale_jitter` 'lo,hi' -> (lo, hi); '' -> None."""
    items = [t for t in str(text or "").split(",") if t.strip()]
    if not items:
        return None
    try:
        lo, hi = (float(t) for t in items)
    except ValueError:
        raise ValueError(f"config.train.backbone_scale_jitter: expected 'lo,hi' or '', got {text!r}") from None
    return lo, hi


@dataclasses.dataclass(frozen=True)
class BackboneSampleSpec:
    """Backbone training samples (`transforms.backbone_sample`): a crop of one of `crop_sizes` (None: the
    whole image) resized to `input_wh`, scaled by a factor from `scale_jitter` (None: no jitter), flipped."""

    input_wh: Size
    crop_sizes: tuple[Size, ...] | None = None
    scale_jitter: tuple[float, float] | None = None  # (lo, hi), 0 < lo <= hi
    ignore_label: int = 255  # the padding of jittered labels

    def __post_init__(self):
        object.__setattr__(self, "input_wh", check_size(self.input_wh, "magnet.input_size"))
        if self.crop_sizes is not None:
            object.__setattr__(self, "crop_sizes", _sizes(self.crop_sizes, "train.backbone_crop_sizes") or None)
        if self.scale_jitter is not None:
            lo, hi = (float(v) for v in self.scale_jitter)
            if not 0 < lo <= hi:
                raise ValueError(f"config.train.backbone_scale_jitter: expected 0 < lo <= hi, got '{lo:g},{hi:g}'")
            object.__setattr__(self, "scale_jitter", (lo, hi))
        check_ignore_label(self.ignore_label)
        object.__setattr__(self, "ignore_label", int(self.ignore_label))

    @classmethod
    def from_config(cls, config) -> BackboneSampleSpec:
        """`config.magnet.input_size`, `config.train.backbone_crop_sizes` / `backbone_scale_jitter`,
        `config.data.ignore_label`."""
        crops_text = str(config.train.backbone_crop_sizes or "").strip()
        crops = tuple(parse_sizes(crops_text, "train.backbone_crop_sizes")) if crops_text else None
        return cls(parse_size(config.magnet.input_size, "magnet.input_size"), crops,
                   parse_jitter(config.train.backbone_scale_jitter), int(config.data.ignore_label))


@dataclasses.dataclass(frozen=True)
class EvalSampleSpec:
    """Evaluation samples (`transforms.eval_sample`): the full image and label and, with `with_patches`,
    every scale's patch grid of `crop_wh` crops resized to `input_wh`."""

    scales: tuple[Size, ...]
    crop_wh: Size
    input_wh: Size
    with_patches: bool = True

    def __post_init__(self):
        object.__setattr__(self, "scales", _sizes(self.scales, "magnet.scales"))
        object.__setattr__(self, "crop_wh", check_size(self.crop_wh, "magnet.crop_size"))
        object.__setattr__(self, "input_wh", check_size(self.input_wh, "magnet.input_size"))
        check_scales(self.scales, self.crop_wh)

    @classmethod
    def from_config(cls, config, *, with_patches: bool = True) -> EvalSampleSpec:
        m = config.magnet
        return cls(tuple(parse_sizes(m.scales, "magnet.scales")), parse_size(m.crop_size, "magnet.crop_size"),
                   parse_size(m.input_size, "magnet.input_size"), with_patches)


@dataclasses.dataclass(frozen=True)
class LoaderSpec:
    """How a training loader orders, reads and batches (see `pipelines`' module docstring).

    `batch_size` is per process; `seed` fixes every epoch's order and each record's randomness; `workers`
    child processes (0: in this process); process `shard_index` of `shard_count` reads its 1/shard_count;
    `num_epochs` None repeats forever; `read_threads` / `read_buffer`: threads decoding full images in each
    process and how many decoded images they keep ready."""

    batch_size: int
    seed: int = 0
    workers: int = 0
    num_epochs: int | None = None
    shard_index: int = 0
    shard_count: int = 1
    worker_buffer_size: int = 2
    read_threads: int = 1
    read_buffer: int = 2

    def __post_init__(self):
        check_at_least(self.batch_size, 1, "train.batch_size")
        check_num_workers(self.workers)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"config.seed: expected an integer, got {self.seed!r}")
        if self.num_epochs is not None and (not isinstance(self.num_epochs, int) or self.num_epochs < 1):
            raise ValueError(f"num_epochs: expected None (forever) or >= 1, got {self.num_epochs!r}")
        if not 0 <= self.shard_index < self.shard_count:
            raise ValueError(f"shard_index {self.shard_index} must be in [0, shard_count={self.shard_count})")
        for name in ("worker_buffer_size", "read_threads", "read_buffer"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, config, **fields) -> LoaderSpec:
        """`seed` from `config.seed`, `workers` from `config.data.num_workers`; `fields` gives the rest
        (`batch_size` at least) and may replace those two."""
        return cls(**{"seed": int(config.seed), "workers": int(config.data.num_workers), **fields})
