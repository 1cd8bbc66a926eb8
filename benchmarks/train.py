"""Training throughput (samples/s): the refiner step and the backbone step, against the original.

Run by hand (never a test):

    python benchmarks/train.py                          # DeepGlobe geometry: fpn, 7 classes, input 508, batch 8
    python benchmarks/train.py --what refiner --steps 3 --cpus 2
    python benchmarks/train.py --with-data              # also time the grain pipeline on 2448x2448 JPEGs
    python benchmarks/train.py --backbone small --input 128 --batch 8    # the synthetic demo's geometry

`refiner`: one optimizer step of `magnet_jax.training.refiner_step` = frozen backbone (eval) on the
coarse images and on the fine crops, RoI-align of the coarse probabilities, refinement module
forward + backward (OHEM loss), SGD update, and the logged confusion matrices (coarse / fine /
aggregated). `backbone`: one step of `backbone_step` (CE on out [+ 0.4 aux], SGD). Timed: the
median of `--steps` jitted steps after compilation and `--warmup` untimed steps, on batches
already on the device, `block_until_ready` included. `--with-data` adds a run where each step
first pulls its batch from the real grain loader (worker processes as `--workers`) reading
random 2448x2448 JPEGs, so host-side decoding and resizing count too.

The original (PyTorch MagNet `train.py`, DeepGlobe, this project's 2-core CPU) trains the
refiner at 2 samples per 13.7 s (0.146 samples/s); the project's target is >= 2x that. The
allocator mode is `tuned`, as `--mode=train`, and the freed heap is handed back between the two kinds
of step, as the training loop does where its workload changes (magnet_jax/allocator.py;
MAGNET_JAX_ALLOCATOR=bounded reproduces the trimmed heap that re-faults every step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magnet_jax.allocator import configure_allocator, heap_guard_releases, release_heap  # noqa: E402

allocator = configure_allocator()  # as main.py (MAGNET_JAX_ALLOCATOR overrides)

ORIGINAL_REFINER_SAMPLES_PER_S = 2 / 13.7


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", nargs="+", default=["refiner", "backbone"], choices=["refiner", "backbone"])
    p.add_argument("--backbone", default="fpn", help="backbone model (default fpn, DeepGlobe's)")
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--input", type=int, default=508, help="input size (square), default 508")
    p.add_argument("--batch", type=int, default=8, help="global batch, default 8")
    p.add_argument("--steps", type=int, default=3, help="timed steps; the median is reported")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--with-data", action="store_true", help="also time steps fed by the grain loader")
    p.add_argument("--image-size", type=int, default=2448, help="--with-data: source image size")
    p.add_argument("--workers", type=int, default=2, help="--with-data: grain worker processes")
    p.add_argument("--cpus", type=int, default=0, help="pin the process to this many CPU cores first (Linux)")
    p.add_argument("--native-conv", action="store_true", help="XLA conv gradients (fast_conv=False)")
    p.add_argument("--frozen-conv", default="auto", choices=["auto", "direct", "winograd"],
                   help="refiner: the frozen backbone's convolutions (config.magnet.conv_algorithm, default auto)")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    return p.parse_args(argv)


def _config(args, root: str = ""):
    from magnet_jax.config import default_config

    c = default_config()
    c.data.name = "custom"
    c.data.num_classes = args.classes
    c.data.root = root
    c.data.label_format = "train_ids"
    c.data.num_workers = args.workers
    c.model.backbone = args.backbone
    s = args.input
    big = args.image_size
    c.magnet.scales = f"{big // 4}-{big // 4},{big // 2}-{big // 2},{big}-{big}"
    c.magnet.crop_size = f"{big // 4}-{big // 4}"
    c.magnet.input_size = f"{s}-{s}"
    c.train.batch_size = args.batch
    c.train.backbone_crop_sizes = f"{big // 4}-{big // 4},{big // 2}-{big // 2},{big}-{big}"
    c.train.backbone_scale_jitter = ""
    return c


def _random_batch(kind: str, args, rng):
    import numpy as np

    b, s, n = args.batch, args.input, args.classes
    labels = rng.integers(0, n, (b, s, s)).astype(np.int32)
    if kind == "backbone":
        return {"image": rng.standard_normal((b, s, s, 3)).astype(np.float32), "label": labels}
    x0 = rng.uniform(0, s * 0.75, (b, 2)).astype(np.float32)
    boxes = np.concatenate([x0, x0 + s / 4], 1).astype(np.float32)
    return {
        "coarse_image": rng.standard_normal((b, s, s, 3)).astype(np.float32),
        "fine_image": rng.standard_normal((b, s, s, 3)).astype(np.float32),
        "label": labels,
        "box": boxes,
    }


def _build(kind: str, args, mesh):
    import jax

    from magnet_jax.models import build_model
    from magnet_jax.sharding import replicate
    from magnet_jax.training.backbone_step import make_backbone_step
    from magnet_jax.training.optim import sgd_coupled
    from magnet_jax.training.refiner_step import make_refiner_step
    from magnet_jax.training.state import init_train_state, split_model

    tx = sgd_coupled(1e-3, 0.9, 5e-4)
    sched = lambda step: 1e-3  # noqa: E731
    bdef, p, bs, r = split_model(build_model(args.backbone, args.classes), args.backbone)
    if kind == "backbone":
        state = replicate(init_train_state(p, bs, r, tx), mesh)
        step = make_backbone_step(
            bdef, tx, sched, num_classes=args.classes, ignore_label=255, aux_weight=0.4, mesh=mesh,
            fast_conv=not args.native_conv,
        )
        return state, step
    rdef, rp, rbs, rr = split_model(build_model("refinement", args.classes), "refinement")
    state = replicate(init_train_state(rp, rbs, rr, tx), mesh)
    frozen = replicate((p, bs, r), mesh)
    jstep = make_refiner_step(
        bdef, rdef, tx, sched, num_classes=args.classes, ignore_label=255, input_hw=(args.input, args.input),
        input_order="fine_first", ohem_thresh=0.7, ohem_min_kept=100000, mesh=mesh,
        fast_conv=not args.native_conv, frozen_conv=args.frozen_conv,
    )
    del jax
    return state, (lambda st, batch: jstep(st, frozen, batch))


def _time_steps(step, state, batches, args) -> tuple[list[float], list[float], object]:
    """(wall seconds, process CPU seconds) of each timed step, and the last state."""
    import jax

    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        batch = batches(i)
        t0, c0 = time.perf_counter(), time.process_time()
        state, metrics = step(state, batch() if callable(batch) else batch)
        jax.block_until_ready((state, metrics))
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return times, cpu, state


def _write_images(folder: str, n: int, size: int, classes: int) -> str:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        img = rng.integers(0, 256, (size // 8, size // 8, 3), np.uint8)
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
        lab = cv2.resize(rng.integers(0, classes, (16, 16), np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(os.path.join(folder, f"{i}.jpg"), img)
        cv2.imwrite(os.path.join(folder, f"{i}.png"), lab)
        lines.append(f"{i}.jpg\t{i}.png")
    with open(os.path.join(folder, "train.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(folder, "train.txt")


def main(argv=None) -> int:
    args = _args(argv)
    if args.cpus > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    import jax
    import numpy as np

    from magnet_jax.sharding import check_batch_size, make_mesh, shard_batch

    mesh = make_mesh()
    check_batch_size(args.batch, mesh, field="--batch")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = f"{jax.devices()[0].device_kind} x{jax.device_count()} ({jax.default_backend()}), {cpus} CPU core(s)"
    print(f"device: {device}; backbone {args.backbone}, {args.classes} classes, input {args.input}, batch {args.batch}")
    rows = []
    tmp = tempfile.TemporaryDirectory() if args.with_data else None
    list_path = ""
    if tmp is not None:
        list_path = _write_images(tmp.name, max(2 * args.batch, 4), args.image_size, args.classes)
    for kind in args.what:
        release_heap()  # a new workload: start from the live memory (as training.loop does)
        rng = np.random.default_rng(0)
        state, step = _build(kind, args, mesh)
        batch = shard_batch(_random_batch(kind, args, rng), mesh)
        t0 = time.perf_counter()
        times, cpu, state = _time_steps(step, state, lambda i, b=batch: b, args)
        med = statistics.median(times)
        row = {
            "what": kind,
            "feed": "device batches",
            "device": device,
            "backbone": args.backbone,
            "input": args.input,
            "batch": args.batch,
            "conv": "native" if args.native_conv or jax.default_backend() != "cpu" else "ops.conv im2col",
            "first_steps_s": round(time.perf_counter() - t0 - sum(times), 2),
            "step_s": round(med, 3),
            "samples_per_s": round(args.batch / med, 4),
            "cpu_s_per_step": round(statistics.median(cpu), 3),  # steadier than step_s on a shared CPU
            "allocator": allocator,
            "heap_guard_releases": heap_guard_releases(),  # so far in this process (allocator.start_heap_guard)
        }
        if kind == "refiner":
            row["frozen_conv"] = args.frozen_conv
        if kind == "refiner":
            row["original_samples_per_s"] = round(ORIGINAL_REFINER_SAMPLES_PER_S, 4)
            row["x_original"] = round(row["samples_per_s"] / ORIGINAL_REFINER_SAMPLES_PER_S, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.with_data:
            from magnet_jax.data import build_source
            from magnet_jax.data.pipelines import make_train_loader
            from magnet_jax.data.sample_spec import BackboneSampleSpec, LoaderSpec, RefinerPairSpec

            c = _config(args, tmp.name)
            c.data.train_list = list_path
            sample = (RefinerPairSpec if kind == "refiner" else BackboneSampleSpec).from_config(c)
            loader = make_train_loader(sample, LoaderSpec(batch_size=args.batch, seed=0, workers=args.workers),
                                       build_source(c, "train"))
            it = iter(loader)
            times, _, state = _time_steps(step, state, lambda i, it=it: (lambda: shard_batch(next(it), mesh)), args)
            med = statistics.median(times)
            row = dict(row, feed=f"grain loader, {args.workers} workers, {args.image_size}px JPEGs",
                       step_s=round(med, 3), samples_per_s=round(args.batch / med, 4))  # fmt: skip
            if kind == "refiner":
                row["x_original"] = round(row["samples_per_s"] / ORIGINAL_REFINER_SAMPLES_PER_S, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            del it, loader
        del state, step, batch  # before the next kind's release_heap
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
