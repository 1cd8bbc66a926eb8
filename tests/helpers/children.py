"""What the multi-device and kill tests run in a child process (through `helpers.multidevice`): each function
returns a JSON-able result, or writes arrays to the .npz path it is given. Imports are inside the functions:
the child's device count and environment are set before JAX starts."""

from __future__ import annotations


def streamed_one_vs_eight_devices(out: str) -> dict:
    """Streamed prediction (two chained stages, 3x3 and 5x5 overlapping grids in 2x2-patch tiles) on a 1-device
    mesh and on the 8-device mesh of `make_mesh`; labels, point counts and stage-1 probabilities of both to `out`.
    Needs 8 devices."""
    import jax
    import numpy as np

    from magnet_jax.data.synthetic import generate_sample
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.models import build_model
    from magnet_jax.sharding import make_mesh

    assert jax.device_count() == 8, jax.devices()
    image = generate_sample(1234, "test", 2, 384)[0]
    backbone = build_model("small", 5, seed=7)
    backbone.classify.kernel[...] = backbone.classify.kernel[...] * 30.0
    refiner = build_model("refinement", 5, seed=8)
    plan = make_plan([(96, 96), (192, 192), (384, 384)], (88, 88), (80, 80), 5, n_patches=-1, n_points=0.5)
    options = StreamOptions(mode="on", tile_patches=2)
    arrays = {}
    for name, mesh in (("one", make_mesh(jax.devices()[:1])), ("eight", make_mesh())):
        res = MagNetPredictor(plan, backbone, refiner, stream=options, mesh=mesh).predict(image, keep_labels=True)
        for s in res.stages:
            arrays[f"{name}_labels{s.index}"] = s.argmax.read(0, s.size_hw[0], 0, s.size_hw[1])
            arrays[f"{name}_points{s.index}"] = np.int64(s.points)
        arrays[f"{name}_probs1"] = res.stages[1].probs.read(0, 192, 0, 192)
        arrays[f"{name}_devices"] = np.int64(mesh.devices.size)
        res.close()
    np.savez(out, **arrays)
    return {"devices": [int(arrays["one_devices"]), int(arrays["eight_devices"])]}


def training_one_vs_eight_devices() -> dict:
    """Two backbone and refiner training steps on 1 device and on 8: their losses, the largest parameter
    difference, and whether the refiner's fine-confidence maps are equal. Needs 8 devices."""
    import jax
    import numpy as np

    from magnet_jax.models import build_model
    from magnet_jax.sharding import make_mesh, replicate, shard_batch
    from magnet_jax.training.backbone_step import make_backbone_step
    from magnet_jax.training.optim import sgd_coupled
    from magnet_jax.training.refiner_step import make_refiner_step
    from magnet_jax.training.state import init_train_state, split_model

    assert jax.device_count() == 8, jax.devices()
    n, hw, b = 3, 32, 8
    rng = np.random.default_rng(0)
    images = rng.normal(size=(b, hw, hw, 3)).astype(np.float32)
    labels = rng.integers(0, n, (b, hw, hw)).astype(np.int32)
    labels[:, :4] = 255
    boxes = np.stack([rng.uniform(0, 8, b), rng.uniform(0, 8, b)], 1).astype(np.float32)
    boxes = np.concatenate([boxes, boxes + 16], 1)
    ref_batch = {"coarse_image": images, "fine_image": images[:, ::-1].copy(), "label": labels, "box": boxes}
    bb_batch = {"image": images, "label": labels}
    # The original's learning rates: backbone 0.01 (poly), refiner 1e-3 (MultiStepLR).
    btx, rtx = sgd_coupled(1e-2, 0.9, 5e-4), sgd_coupled(1e-3, 0.9, 5e-4)

    def sched(step):
        return 1e-3

    def run(devices):
        mesh = make_mesh(devices)
        bdef, p, bs, r = split_model(build_model("small", n, seed=1), "small")
        bstate = replicate(init_train_state(p, bs, r, btx), mesh)
        bstep = make_backbone_step(bdef, btx, sched, num_classes=n, ignore_label=255, aux_weight=0.4, mesh=mesh)
        rdef, rp, rbs, rr = split_model(build_model("refinement", n, seed=2), "refinement")
        rstate = replicate(init_train_state(rp, rbs, rr, rtx), mesh)
        # a confident frozen backbone (random ones give near-uniform probabilities, which the refiner's
        # input BatchNorm would amplify into an ill-conditioned comparison)
        p["classify"]["kernel"] = p["classify"]["kernel"] * 30.0
        frozen = replicate((p, bs, r), mesh)
        rstep = make_refiner_step(bdef, rdef, rtx, sched, num_classes=n, ignore_label=255, input_hw=(hw, hw),
                                  input_order="fine_first", ohem_thresh=0.7, ohem_min_kept=2000, mesh=mesh)  # fmt: skip
        losses = []
        for _ in range(2):
            bstate, bm = bstep(bstate, shard_batch(bb_batch, mesh))
            rstate, rm = rstep(rstate, frozen, shard_batch(ref_batch, mesh))
            losses += [float(bm["loss"]), float(rm["loss"])]
        leaves = [np.asarray(x) for x in jax.tree.leaves((bstate.params, bstate.batch_stats,
                                                         rstate.params, rstate.batch_stats))]  # fmt: skip
        assert rstate.params["seg_conv"]["kernel"].sharding.is_fully_replicated
        return losses, leaves, np.asarray(rm["conf_fine"])

    l1, p1, c1 = run(jax.devices()[:1])
    l8, p8, c8 = run(jax.devices())
    return {
        "loss_1": l1,
        "loss_8": l8,
        "loss_diff": max(abs(a - b) for a, b in zip(l1, l8, strict=True)),
        "param_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(p1, p8, strict=True)),
        "conf_equal": bool((c1 == c8).all()),
    }


def two_process_step_vs_one_device() -> dict:
    """One process of a 2-process x 2-device jax.distributed job: two backbone steps over the global mesh, each
    process feeding its half of the batch, against the same steps on one local device (the whole batch)."""
    import jax

    from magnet_jax.sharding import maybe_initialize_distributed

    assert maybe_initialize_distributed()
    import numpy as np

    from magnet_jax.models import build_model
    from magnet_jax.sharding import make_mesh, replicate, shard_batch, to_host
    from magnet_jax.training.backbone_step import make_backbone_step
    from magnet_jax.training.optim import sgd_coupled
    from magnet_jax.training.state import init_train_state, split_model

    assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
    n, hw, b = 3, 32, 8
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(b, hw, hw, 3)).astype(np.float32),
             "label": rng.integers(0, n, (b, hw, hw)).astype(np.int32)}  # fmt: skip
    tx = sgd_coupled(1e-2, 0.9, 5e-4)

    def run(devices, local_batch):
        mesh = make_mesh(devices)
        model_def, p, bs, r = split_model(build_model("small", n, seed=1), "small")
        state = replicate(init_train_state(p, bs, r, tx), mesh)
        step = make_backbone_step(model_def, tx, lambda s: 1e-2, num_classes=n, ignore_label=255,
                                  aux_weight=0.4, mesh=mesh)  # fmt: skip
        losses = []
        for _ in range(2):
            state, metrics = step(state, shard_batch(local_batch, mesh))
            losses.append(float(metrics["loss"]))
        return losses, [np.asarray(x) for x in jax.tree.leaves(to_host((state.params, state.batch_stats)))]

    half = b // 2
    me = jax.process_index()
    l_global, p_global = run(jax.devices(), {k: v[me * half : (me + 1) * half] for k, v in batch.items()})
    l_single, p_single = run(jax.local_devices()[:1], batch)
    return {
        "loss_diff": max(abs(a - c) for a, c in zip(l_global, l_single, strict=True)),
        "param_diff": max(float(np.max(np.abs(a - c))) for a, c in zip(p_global, p_single, strict=True)),
    }


def write_results_forever(path: str) -> None:
    """Writes a large results file atomically, over and over, after printing `ready`, until it is killed."""
    import numpy as np

    from magnet_jax.evaluation import write_json_atomic

    big = {"rows": np.arange(2_000_000).tolist()}
    print("ready", flush=True)
    while True:
        write_json_atomic(path, big)


def allocator_faults() -> list:
    """The allocator setting of `$MAGNET_JAX_ALLOCATOR` (default tuned), then the minor page faults of three
    256 MiB allocations after a first one: [mode applied, faults]."""
    import resource

    from magnet_jax.allocator import configure_allocator

    mode = configure_allocator()
    import numpy as np

    a = np.ones(2**25)  # 256 MiB: far above glibc's default mmap threshold
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        a = np.ones(2**25)
        del a
    return [mode, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before]


def allocator_rss_after_free(default: str) -> list:
    """The allocator setting with command default `default`, then the resident set (MiB, rounded) after 2.5 GiB
    freed at the top of the heap: [mode applied, MiB]."""
    from magnet_jax.allocator import configure_allocator

    mode = configure_allocator(default)
    import numpy as np

    a = np.ones(2**28 + 2**26)  # 2.5 GiB
    del a
    with open("/proc/self/statm") as f:
        return [mode, round(int(f.read().split()[1]) * 4096 / 2**20)]


def allocator_guarded_rss(limit_factor: str) -> list:
    """A 768 MiB hole freed below a live block in a `bounded` heap, then a heap guard (threshold half of
    `limit_factor` times the resident set) left 0.3 s: [mode, guard started, MiB resident before, MiB after]."""
    import time

    from magnet_jax.allocator import configure_allocator, resident_bytes, start_heap_guard

    mode = configure_allocator("bounded")  # glibc settings as tuned (holes are never trimmed), without its guard
    import numpy as np

    hole = np.ones(2**26 + 2**25)  # 768 MiB
    pin = np.ones(2**16)  # above it in the heap: freeing `hole` leaves a hole, not a free top
    del hole
    kept = resident_bytes()
    started = start_heap_guard(fraction=0.5, interval_s=0.02, limit_bytes=int(float(limit_factor) * kept))
    time.sleep(0.3)
    after = resident_bytes()
    del pin  # live until the measurement
    return [mode, started, kept // 2**20, after // 2**20]
