"""grain pipelines: random-access source -> per-sample transform -> batches.

Both take typed specs (`sample_spec.py`: what each record becomes, how the loader batches it) and a
`Source`, never a ConfigDict: the commands build the specs once.

Training (`make_train_loader`) is a `grain.DataLoader`:
- order: a global shuffle per epoch from `LoaderSpec.seed` (`grain.samplers.IndexSampler`), so every epoch is
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

from magnet_jax.data.sample_spec import BackboneSampleSpec, EvalSampleSpec, LoaderSpec, RefinerPairSpec
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


def sample_transform(spec: RefinerPairSpec | BackboneSampleSpec, label_decoder=None) -> grain.transforms.RandomMap:
    """The per-sample training transform of `spec`: refiner pairs or backbone samples (`sample_spec`)."""
    if isinstance(spec, RefinerPairSpec):
        return RefinerPairTransform(spec.scales, spec.crop_wh, spec.input_wh, label_decoder)
    if isinstance(spec, BackboneSampleSpec):
        return BackboneSampleTransform(spec.input_wh, spec.crop_sizes, spec.scale_jitter, spec.ignore_label,
                                       label_decoder)
    raise TypeError(f"expected a RefinerPairSpec or a BackboneSampleSpec, got {type(spec).__name__}")


def _ensure_flags_parsed() -> None:
    """grain's worker processes read absl flags (defaults are fine); outside `app.run` (tests, notebooks,
    benchmarks) nothing has parsed them, so mark them parsed with their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def steps_per_epoch(num_records: int, batch_size: int, shard_count: int = 1) -> int:
    """Batches one process gets per epoch (records split over processes, remainders dropped)."""
    return (num_records // shard_count) // batch_size


def make_train_loader(sample: RefinerPairSpec | BackboneSampleSpec, loader: LoaderSpec, source: Source, *,
                      split: str = "train") -> grain.DataLoader:
    """A grain DataLoader of `source`'s training batches (see the module docstring for order, state and
    sharding); `split` only names the source in errors.

    RefinerPairSpec: {"coarse_image", "fine_image": float32 [B, h, w, 3], "box": float32 [B, 4],
    "label": int32 [B, h, w]}; BackboneSampleSpec: {"image": float32 [B, h, w, 3], "label": int32 [B, h, w]}
    (B = `loader.batch_size`, (w, h) = the spec's `input_wh`).
    """
    if steps_per_epoch(len(source), loader.batch_size, loader.shard_count) < 1:
        raise ValueError(
            f"split {split!r} has {len(source)} samples: fewer than one batch of {loader.batch_size} per process "
            f"for {loader.shard_count} process(es)"
        )
    if loader.workers > 0:
        _ensure_flags_parsed()
    shard = grain.sharding.ShardOptions(shard_index=loader.shard_index, shard_count=loader.shard_count,
                                        drop_remainder=True)  # fmt: skip
    sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=shard, shuffle=True,
                                          num_epochs=loader.num_epochs, seed=loader.seed)
    return grain.DataLoader(
        data_source=source.raw_view(),
        sampler=sampler,
        operations=[sample_transform(sample, source.label_decoder),
                    grain.transforms.Batch(batch_size=loader.batch_size, drop_remainder=True)],
        worker_count=loader.workers,
        worker_buffer_size=loader.worker_buffer_size,
        shard_options=shard,
        read_options=grain.ReadOptions(num_threads=loader.read_threads, prefetch_buffer_size=loader.read_buffer),
    )


def make_eval_iterator(spec: EvalSampleSpec, source: Source, *, max_images: int = -1, workers: int = 0,
                       shard_index: int = 0, shard_count: int = 1) -> grain.IterDataset:
    """`source`'s evaluation samples in list order, one image each: {"image": uint8 [H, W, 3],
    "label": uint8 [H, W], "name": str} plus, with `spec.with_patches`, "patches": [float32 [n_s, h, w, 3]
    per scale] and "boxes": [float32 [n_s, 4] ratios per scale]. Iterate it (each `iter()` starts over);
    `max_images` > 0 keeps the first images; process `shard_index` of `shard_count` gets every
    shard_count-th image."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must be in [0, shard_count={shard_count})")
    ds = grain.MapDataset.source(source.raw_view())
    if max_images is not None and max_images > 0:
        ds = ds[: int(max_images)]
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    ds = ds.map(EvalTransform(spec.scales, spec.crop_wh, spec.input_wh, spec.with_patches, source.label_decoder))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    if workers > 0:
        _ensure_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return it_ds
