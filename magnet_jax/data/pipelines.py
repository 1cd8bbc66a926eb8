"""grain pipelines: random-access source -> per-sample transform -> batches.

Training (`make_train_loader`) is a `grain.DataLoader`:
- order: a global shuffle per epoch from `seed` (`grain.samplers.IndexSampler`), so every epoch is
  reproducible; each record's randomness (scale, crop, flip) comes from a generator seeded by
  (seed, position in the stream), so a sample does not depend on the number of workers;
- workers: `workers` child processes (0 = in this process); worker k of n takes stream positions
  k, k + n, ... and batches them itself, so batches are grouped differently for different worker counts
  (the same samples per epoch). Resume with the worker count the state was saved with;
- checkpointing: `it = iter(loader)`; `state = it.get_state()` (bytes, a small JSON) is saved with the
  training checkpoint; `it = iter(loader); it.set_state(state)` resumes after the last batch returned,
  without repeating or skipping a sample (with orbax: `grain.checkpoint.CheckpointSave(it)` /
  `grain.checkpoint.CheckpointRestore(it)` as an item of the training checkpoint);
- multi-host: process `shard_index` of `shard_count` reads a disjoint 1/shard_count of every epoch
  (remainder dropped); `batch_size` is per process, incomplete batches are dropped.

Evaluation (`make_eval_iterator`) is a grain `IterDataset` over the split in order (sharded the same
way), one full image per element: see `transforms.eval_sample`.
"""

from __future__ import annotations

import grain
import numpy as np

from magnet_jax.config import parse_size, parse_sizes
from magnet_jax.data.datasets import build_source
from magnet_jax.data.sources import Source
from magnet_jax.data.transforms import backbone_sample, eval_sample, refiner_pair


class RefinerPairTransform(grain.transforms.RandomMap):
    """raw example -> `transforms.refiner_pair` (coarse_image, fine_image, box, label)."""

    def __init__(self, scales, crop_wh, input_wh, label_decoder):
        self.scales, self.crop_wh, self.input_wh, self.label_decoder = list(scales), crop_wh, input_wh, label_decoder

    def random_map(self, element, rng: np.random.Generator):
        return refiner_pair(element, scales=self.scales, crop_wh=self.crop_wh, input_wh=self.input_wh, rng=rng,
                            label_decoder=self.label_decoder)


class BackboneSampleTransform(grain.transforms.RandomMap):
    """raw example -> `transforms.backbone_sample` (image, label)."""

    def __init__(self, input_wh, crop_sizes, scale_jitter, ignore_label, label_decoder):
        self.input_wh, self.crop_sizes, self.scale_jitter = input_wh, crop_sizes, scale_jitter
        self.ignore_label, self.label_decoder = ignore_label, label_decoder

    def random_map(self, element, rng: np.random.Generator):
        return backbone_sample(element, input_wh=self.input_wh, rng=rng, crop_sizes=self.crop_sizes,
                               scale_jitter=self.scale_jitter, ignore_label=self.ignore_label,
                               label_decoder=self.label_decoder)


class EvalTransform(grain.transforms.Map):
    def __init__(self, scales, crop_wh, input_wh, with_patches, label_decoder):
        self.scales, self.crop_wh, self.input_wh = scales, crop_wh, input_wh
        self.with_patches, self.label_decoder = with_patches, label_decoder

    def map(self, element):
        return eval_sample(element, scales=self.scales, crop_wh=self.crop_wh, input_wh=self.input_wh,
                           with_patches=self.with_patches, label_decoder=self.label_decoder)


def _jitter_from_config(text: str) -> tuple[float, float] | None:
    items = [t for t in str(text or "").split(",") if t.strip()]
    if not items:
        return None
    try:
        lo, hi = (float(t) for t in items)
    except ValueError:
        raise ValueError(f"config.train.backbone_scale_jitter: expected 'lo,hi' or '', got {text!r}") from None
    if not 0 < lo <= hi:
        raise ValueError(f"config.train.backbone_scale_jitter: expected 0 < lo <= hi, got {text!r}")
    return lo, hi


def sample_transform(config, kind: str, source: Source, scales=None) -> grain.transforms.RandomMap:
    """The per-sample training transform of `kind` ("refiner" | "backbone") configured from `config`;
    `scales` [(W, H), ...] replaces `config.magnet.scales` for refiner pairs (a per-stage refiner's own)."""
    input_wh = parse_size(config.magnet.input_size, "magnet.input_size")
    if kind == "refiner":
        scales = list(scales) if scales is not None else parse_sizes(config.magnet.scales, "magnet.scales")
        return RefinerPairTransform(scales,
                                    parse_size(config.magnet.crop_size, "magnet.crop_size"), input_wh,
                                    source.label_decoder)
    if kind == "backbone":
        crops_text = str(config.train.backbone_crop_sizes or "").strip()
        crops = parse_sizes(crops_text, "train.backbone_crop_sizes") if crops_text else None
        return BackboneSampleTransform(input_wh, crops, _jitter_from_config(config.train.backbone_scale_jitter),
                                       int(config.data.ignore_label), source.label_decoder)
    raise ValueError(f"kind must be 'refiner' or 'backbone', got {kind!r}")


def _ensure_flags_parsed() -> None:
    """grain's worker processes read absl flags (defaults are fine); outside `app.run` (tests, notebooks,
    benchmarks) nothing has parsed them, so mark them parsed with their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def steps_per_epoch(num_records: int, batch_size: int, shard_count: int = 1) -> int:
    """Batches one process gets per epoch (records split over processes, remainders dropped)."""
    return (num_records // shard_count) // batch_size


def make_train_loader(config, split: str = "train", kind: str = "refiner", *, batch_size: int,
                      seed: int | None = None, num_epochs: int | None = None, shard_index: int = 0,
                      shard_count: int = 1, workers: int | None = None, source: Source | None = None,
                      workdir: str | None = None, worker_buffer_size: int = 2, read_threads: int = 1,
                      read_buffer: int = 2, scales=None) -> grain.DataLoader:
    """A grain DataLoader of training batches (see the module docstring for order, state and sharding).

    kind "refiner": {"coarse_image", "fine_image": float32 [B, h, w, 3], "box": float32 [B, 4],
    "label": int32 [B, h, w]}; kind "backbone": {"image": float32 [B, h, w, 3], "label": int32 [B, h, w]}.
    `seed` defaults to config.seed, `workers` to config.data.num_workers, `source` to build_source(config,
    split, workdir=workdir). num_epochs None repeats forever. `read_threads` / `read_buffer`: threads
    reading (decoding) full images in each process and how many decoded images they keep ready (grain's
    defaults, 16 and 500, would hold hundreds of full-resolution images in memory). `scales`: the
    refiner pairs' scales [(W, H), ...] when not `config.magnet.scales` (see `sample_transform`).
    """
    source = source if source is not None else build_source(config, split, workdir=workdir)
    seed = int(config.seed if seed is None else seed)
    workers = int(config.data.num_workers if workers is None else workers)
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, shard_count={shard_count})")
    if steps_per_epoch(len(source), batch_size, shard_count) < 1:
        raise ValueError(
            f"split {split!r} has {len(source)} samples: fewer than one batch of {batch_size} per process "
            f"for {shard_count} process(es)"
        )
    if workers > 0:
        _ensure_flags_parsed()
    shard = grain.sharding.ShardOptions(shard_index=shard_index, shard_count=shard_count, drop_remainder=True)
    sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=shard, shuffle=True,
                                          num_epochs=num_epochs, seed=seed)
    return grain.DataLoader(
        data_source=source.raw_view(),
        sampler=sampler,
        operations=[sample_transform(config, kind, source, scales),
                    grain.transforms.Batch(batch_size=batch_size, drop_remainder=True)],
        worker_count=workers,
        worker_buffer_size=worker_buffer_size,
        shard_options=shard,
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_buffer),
    )


def make_eval_iterator(config, split: str | None = None, *, with_patches: bool = True, max_images: int = -1,
                       workers: int = 0, shard_index: int = 0, shard_count: int = 1,
                       source: Source | None = None, workdir: str | None = None) -> grain.IterDataset:
    """Evaluation samples of `split` (default config.data.eval_split), in list order, one image each:
    {"image": uint8 [H, W, 3], "label": uint8 [H, W], "name": str} plus, with `with_patches`,
    "patches": [float32 [n_s, h, w, 3] per scale] and "boxes": [float32 [n_s, 4] ratios per scale]
    (config.magnet.scales / crop_size / input_size). Iterate it (each `iter()` starts over);
    `max_images` > 0 keeps the first images; process `shard_index` of `shard_count` gets every
    shard_count-th image."""
    split = split or str(config.data.eval_split)
    source = source if source is not None else build_source(config, split, workdir=workdir)
    ds = grain.MapDataset.source(source.raw_view())
    if max_images is not None and max_images > 0:
        ds = ds[: int(max_images)]
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    ds = ds.map(EvalTransform(
        parse_sizes(config.magnet.scales, "magnet.scales"), parse_size(config.magnet.crop_size, "magnet.crop_size"),
        parse_size(config.magnet.input_size, "magnet.input_size"), with_patches, source.label_decoder,
    ))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    if workers > 0:
        _ensure_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return it_ds
