"""grain pipelines: batches, per-seed reproducible epochs, exact resume of the iterator, sharding, evaluation."""

import numpy as np
import pytest
from helpers.fakes import write_deepglobe

from magnet_jax.config import default_config
from magnet_jax.data import build_source, make_eval_iterator, make_train_loader, steps_per_epoch
from magnet_jax.data.sample_spec import BackboneSampleSpec, EvalSampleSpec, LoaderSpec, RefinerPairSpec

N = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipe")
    write_deepglobe(str(tmp / "dg"), N, size=48, lists_dir=str(tmp / "lists"))
    c = default_config()
    c.data.name = "deepglobe"
    c.data.root = str(tmp / "dg")
    for split in ("train", "val", "test"):
        c.data[f"{split}_list"] = str(tmp / "lists" / f"{split}.txt")
    c.data.num_classes = 7
    c.data.label_format = "deepglobe_rgb"
    c.magnet.scales = "12-12,24-24,48-48"
    c.magnet.crop_size = "12-12"
    c.magnet.input_size = "10-10"
    c.train.backbone_crop_sizes = "12-12,24-24,48-48"
    c.train.backbone_scale_jitter = ""
    return c, build_source(c, "train")


def _loader(c, kind, source, **loader):
    """The loader of `kind` ("refiner" | "backbone") with the specs the train command builds from `c`."""
    sample = RefinerPairSpec.from_config(c) if kind == "refiner" else BackboneSampleSpec.from_config(c)
    return make_train_loader(sample, LoaderSpec(**loader), source)


def _all(it):
    return [b for b in it]


def _same(a, b):
    return len(a) == len(b) and all(all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def test_refiner_batches(setup):
    c, source = setup
    loader = _loader(c, "refiner", source, batch_size=2, seed=0, num_epochs=1)
    batches = _all(loader)
    assert len(batches) == steps_per_epoch(N, 2) == 3
    b = batches[0]
    assert b["coarse_image"].shape == (2, 10, 10, 3) and b["fine_image"].shape == (2, 10, 10, 3)
    assert b["box"].shape == (2, 4) and b["label"].shape == (2, 10, 10) and b["label"].dtype == np.int32
    assert b["box"].dtype == np.float32 and b["coarse_image"].dtype == np.float32


def test_backbone_batches(setup):
    c, source = setup
    loader = _loader(c, "backbone", source, batch_size=3, seed=0, num_epochs=1)
    b = next(iter(loader))
    assert b["image"].shape == (3, 10, 10, 3) and b["label"].shape == (3, 10, 10)


def test_epochs_reproducible_per_seed(setup):
    c, source = setup

    def run(seed):
        return _all(_loader(c, "refiner", source, batch_size=2, seed=seed, num_epochs=2))

    a, b, other = run(7), run(7), run(8)
    assert _same(a, b) and not _same(a, other)
    assert len(a) == 6
    # Epochs differ from each other (new order, new crops) but each is a permutation of the records.
    assert not _same(a[:3], a[3:])


def test_resume_mid_epoch_exactly(setup):
    c, source = setup
    kwargs = dict(batch_size=2, seed=3, num_epochs=2)
    full = _all(_loader(c, "refiner", source, **kwargs))
    it = iter(_loader(c, "refiner", source, **kwargs))
    head = [next(it) for _ in range(4)]
    state = it.get_state()
    assert isinstance(state, bytes)
    resumed = iter(_loader(c, "refiner", source, **kwargs))
    resumed.set_state(state)
    assert _same(head + _all(resumed), full)


def _samples(batches):
    return sorted(b["fine_image"][i].tobytes() + b["box"][i].tobytes() for b in batches for i in range(len(b["box"])))


def test_workers_give_the_same_samples_and_resume(setup):
    c, source = setup
    kwargs = dict(batch_size=2, seed=3, num_epochs=2)
    single = _all(_loader(c, "refiner", source, **kwargs))
    it = iter(_loader(c, "refiner", source, workers=2, **kwargs))
    head = [next(it) for _ in range(3)]
    state = it.get_state()
    rest = _all(it)
    # Each worker batches its own share of the stream: same samples, grouped differently.
    assert _samples(head + rest) == _samples(single)
    resumed = iter(_loader(c, "refiner", source, workers=2, **kwargs))
    resumed.set_state(state)
    assert _same(head + _all(resumed), head + rest)


def test_sharding_splits_each_epoch(setup):
    c, source = setup
    names = []
    for shard in range(2):
        loader = _loader(c, "backbone", source, batch_size=1, seed=1, num_epochs=1, shard_index=shard, shard_count=2)
        names.append([b["label"].tobytes() + b["image"].tobytes() for b in loader])
    assert len(names[0]) == len(names[1]) == N // 2
    assert not set(names[0]) & set(names[1])
    with pytest.raises(ValueError, match="fewer than one batch"):
        _loader(c, "refiner", source, batch_size=4, shard_count=2)


def test_eval_iterator(setup):
    c, _ = setup
    val = build_source(c, "val")
    samples = list(make_eval_iterator(EvalSampleSpec.from_config(c), val, max_images=2))
    assert len(samples) == 2
    s = samples[0]
    assert s["image"].shape == (48, 48, 3) and s["label"].shape == (48, 48) and isinstance(s["name"], str)
    assert [p.shape[0] for p in s["patches"]] == [1, 4, 16] and s["boxes"][2].shape == (16, 4)
    whole = EvalSampleSpec.from_config(c, with_patches=False)
    shard = list(make_eval_iterator(whole, val, shard_index=1, shard_count=2))
    everything = list(make_eval_iterator(whole, val))
    assert [x["name"] for x in shard] == [x["name"] for x in everything[1::2]]
    assert "patches" not in everything[0]


def test_specs_read_the_config_once(setup):
    c, _ = setup
    assert RefinerPairSpec.from_config(c) == RefinerPairSpec(((12, 12), (24, 24), (48, 48)), (12, 12), (10, 10))
    assert RefinerPairSpec.from_config(c, scales=((12, 12), (48, 48))).scales == ((12, 12), (48, 48))
    assert BackboneSampleSpec.from_config(c) == BackboneSampleSpec((10, 10), ((12, 12), (24, 24), (48, 48)), None, 255)
    c2 = c.copy_and_resolve_references()
    c2.train.backbone_scale_jitter, c2.train.backbone_crop_sizes, c2.seed, c2.data.num_workers = "0.5,2", "", 4, 1
    assert BackboneSampleSpec.from_config(c2).scale_jitter == (0.5, 2.0)
    assert BackboneSampleSpec.from_config(c2).crop_sizes is None
    assert LoaderSpec.from_config(c2, batch_size=3) == LoaderSpec(batch_size=3, seed=4, workers=1)
    assert LoaderSpec.from_config(c2, batch_size=3, seed=9).seed == 9


@pytest.mark.parametrize("build, message", [
    (lambda: BackboneSampleSpec((10, 10), scale_jitter=(2.0, 0.5)),
     "config.train.backbone_scale_jitter: expected 0 < lo <= hi, got '2,0.5'"),
    (lambda: BackboneSampleSpec((10, 10), ignore_label=300),
     "config.data.ignore_label: expected 0..255 (labels are uint8 maps), got 300"),
    (lambda: BackboneSampleSpec((10, 0)),
     "config.magnet.input_size: expected 'W-H' with positive integers, got (10, 0)"),
    (lambda: RefinerPairSpec(((12, 12), (24, 24)), (16, 16), (10, 10)),
     "config.magnet.crop_size 16-16 is larger than scale 12-12 of config.magnet.scales"),
    (lambda: EvalSampleSpec(((24, 24), (12, 12)), (12, 12), (10, 10)),
     "config.magnet.scales: scales must increase in width and height, got '24-24,12-12'"),
    (lambda: LoaderSpec(batch_size=0), "config.train.batch_size: expected >= 1, got 0"),
    (lambda: LoaderSpec(batch_size=2, workers=-1),
     "config.data.num_workers: expected >= 0 (0: read in this process), got -1"),
    (lambda: LoaderSpec(batch_size=2, shard_index=2, shard_count=2), "shard_index 2 must be in [0, shard_count=2)"),
])  # fmt: skip
def test_spec_fields_are_checked_when_built(build, message):
    with pytest.raises(ValueError) as e:
        build()
    assert str(e.value) == message


def test_bad_jitter_is_a_config_error_before_any_work(setup):
    from magnet_jax.commands.checks import check_config

    c, _ = setup
    c2 = c.copy_and_resolve_references()
    c2.train.target, c2.train.backbone_scale_jitter = "backbone", "2"
    with pytest.raises(ValueError, match=r"^config.train.backbone_scale_jitter: expected 'lo,hi' or '', got '2'$"):
        check_config(c2, "train")
