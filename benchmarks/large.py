"""Streamed MagNet on gigapixel-scale images: seconds per megapixel per stage and peak memory.

    python benchmarks/large.py                                  # 5000, 10000, 20000 px, small backbone
    python benchmarks/large.py --sizes 5000 --model fpn --work /tmp/large

For each size S, a synthetic S x S RGB image (`magnet_jax/data/synthetic.py` samples of 1024 px, tiled
with flips) is written once as an uncompressed TIFF (memory-mapped when read) under `--work`, then
predicted in a fresh process by `magnet_jax.inference.outputs.predict_file` (tile by tile) (random-init models:
the speed does not depend on the weights) with scales halving from S down to 1250-ish, then `--crop`
(stage 0 sees the whole image at `--crop`), `--input` px patches, all patches, `--points` of the pixels.
Prints one JSON line per size and a table: per stage the map size, seconds, seconds per megapixel of
that stage's map, and for the whole run seconds per megapixel of the image and the process's peak
resident memory (`ru_maxrss`, so stage maps on disk are not in it; on a GPU also the device peak from
`memory_stats()`). The child sets the allocator as `main.py` does (`magnet_jax/allocator.py`;
`MAGNET_JAX_ALLOCATOR=system` measures glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def scales_for(size: int, crop: int) -> list[int]:
    """S, S/2, S/4, ... while above 2 x crop, then crop (stage 0: the whole image in one patch)."""
    out = [size]
    while out[-1] // 2 > 2 * crop:
        out.append(out[-1] // 2)
    return [crop] + out[::-1]


def make_image(path: Path, size: int) -> None:
    """An S x S synthetic image from 1024 px samples (8 distinct, flipped), written as a plain TIFF."""
    import numpy as np
    import tifffile

    from magnet_jax.data.synthetic import generate_sample

    samples = [generate_sample(1234, "test", i, 1024)[0] for i in range(8)]
    out = tifffile.memmap(str(path) + ".part", shape=(size, size, 3), dtype=np.uint8, bigtiff=size * size * 3 > 2**31)
    n = -(-size // 1024)
    for i in range(n):
        band = np.concatenate([samples[(i * 3 + j) % 8][:: (-1) ** i, :: (-1) ** j] for j in range(n)], axis=1)
        rows = min(1024, size - i * 1024)
        out[i * 1024 : i * 1024 + rows] = band[:rows, :size]
        out.flush()
    del out
    os.replace(str(path) + ".part", path)


def run_one(args) -> dict:
    """Child process: one prediction, its summary with the per-stage sizes."""
    from magnet_jax.allocator import configure_allocator, heap_guard_releases, release_heap

    mode = configure_allocator()  # as main.py, before JAX allocates (MAGNET_JAX_ALLOCATOR overrides)
    import jax

    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.inference.outputs import predict_file
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.inference.tiled import StreamOptions
    from magnet_jax.models import build_model

    if args.cache:
        enable_compilation_cache()
    n = 5
    scales = scales_for(args.size, args.crop)
    plan = make_plan(
        [(s, s) for s in scales], (args.crop, args.crop), (args.input, args.input), n, n_points=args.points
    )
    backbone = build_model(args.model, n, seed=0)
    refiner = build_model("refinement", n, seed=1)
    # after_tile: the freed tile buffers go back to the OS, as the commands set it (commands/checks.py)
    options = StreamOptions(mode="on", tile_patches=args.tile_patches, store_dtype=args.store_dtype, work_dir=args.work,
                            memory_budget_mb=args.budget_mb, after_tile=release_heap)  # fmt: skip
    predictor = MagNetPredictor(plan, backbone, refiner, stream=options)
    t = time.perf_counter()
    summary = predict_file(predictor, args.image, os.path.join(args.work, f"out_{args.size}"))["tiled"]
    summary["wall_s"] = round(time.perf_counter() - t, 2)
    summary["scales"] = scales
    summary["model"] = args.model
    summary["device"] = jax.devices()[0].device_kind
    summary["allocator"], summary["heap_guard_releases"] = mode, heap_guard_releases()
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats:
        summary["device_peak_mb"] = round(stats.get("peak_bytes_in_use", 0) / 2**20, 1)
    return summary


def table(rows: list[dict]) -> str:
    lines = [
        "| image | stage | map | seconds | s / MP of the map |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        mp = r["size_hw"][0] * r["size_hw"][1] / 1e6
        for i, s in enumerate([r["input"]] + r["scales"][1:]):
            sec = r["seconds"][f"stage{i}"]
            lines.append(f"| {r['size_hw'][1]} px | {i} | {s} | {sec:.1f} | {sec / (s * s / 1e6):.2f} |")
        lines.append(
            f"| {r['size_hw'][1]} px | all ({r['model']}) | | {r['total_seconds']:.0f} | "
            f"**{r['total_seconds'] / mp:.2f} s / MP of the image**, peak RSS {r['peak_rss_mb'] / 1024:.2f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="5000,10000,20000")
    p.add_argument("--model", default="small", help="backbone: small | fpn | ...")
    p.add_argument("--crop", type=int, default=512)
    p.add_argument("--input", type=int, default=256)
    p.add_argument("--points", type=float, default=0.75)
    p.add_argument("--tile-patches", type=int, default=0, help="0: from --budget-mb")
    p.add_argument("--budget-mb", type=int, default=4096, help="config.magnet.memory_budget_mb")
    p.add_argument("--store-dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--work", default="/tmp/magnet_large_bench")
    p.add_argument("--cache", action="store_true", help="use JAX's persistent compilation cache")
    p.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--image", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        image = Path(args.work) / f"synthetic_{size}.tif"
        if not image.exists():
            t = time.perf_counter()
            make_image(image, size)
            print(f"wrote {image} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--run", "--size", str(size), "--image", str(image)]
        for flag in ("model", "crop", "input", "points", "tile_patches", "budget_mb", "store_dtype", "work"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--cache"] if args.cache else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"size {size} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(line[-1][len("RESULT ") :])
        row["input"] = args.input
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
