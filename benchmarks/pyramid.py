"""Stage 0 on a pyramidal tiled TIFF: resized from full resolution vs from the nearest pyramid level.

    python benchmarks/pyramid.py                           # 40000 px, JPEG tiles, scale 0 = 1250 px
    python benchmarks/pyramid.py --size 20000 --work /tmp/pyr

Writes (once) a `--size` px RGB BigTIFF with 512 px JPEG tiles and reduced levels by 2, 4, ... down to
<= 512 px as SubIFDs (tifffile's pyramid form; random-looking content: a 512 px synthetic sample
repeated, each level the same pattern at its own size), then times, in one process, MagNet's stage 0 as
the tiled predictor runs it (`kernels.stage0_input` of `rasters.scaled.ScaledImage` at `--scale`, then the
backbone, random-init) with `input_pyramid` off (every tile of level 0 decoded) and on (the smallest level
at least `--scale` decoded). Prints one JSON line: seconds and peak resident MB of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_pyramid(path: Path, size: int, tile: int = 512) -> None:
    import cv2
    import numpy as np
    import tifffile

    from magnet_jax.data.synthetic import generate_sample

    base = generate_sample(1234, "test", 0, tile)[0]
    levels = []
    s = size
    while True:
        levels.append(s)
        if s <= tile:
            break
        s = -(-s // 2)

    def tiles(k: int, side: int):
        period = max(1, tile >> k)
        block = np.tile(cv2.resize(base, (period, period), interpolation=cv2.INTER_AREA), (tile // period,) * 2 + (1,))
        for _ in range((-(-side // tile)) ** 2):
            yield block

    kw = {"tile": (tile, tile), "compression": "jpeg", "photometric": "rgb", "dtype": np.uint8}
    with tifffile.TiffWriter(str(path) + ".part", bigtiff=True) as tw:
        tw.write(tiles(0, size), shape=(size, size, 3), subifds=len(levels) - 1, **kw)
        for k, side in enumerate(levels[1:], start=1):
            tw.write(tiles(k, side), shape=(side, side, 3), subfiletype=1, **kw)
    os.replace(str(path) + ".part", path)


def time_stage0(path: Path, scale: int, inp: int, pyramid: bool) -> dict:
    import jax
    import numpy as np

    from magnet_jax.inference import kernels
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.models import build_model
    from magnet_jax.rasters.large_io import open_image
    from magnet_jax.rasters.scaled import ScaledImage

    source = open_image(path)
    h, w = source.size_hw
    plan = make_plan([(scale, scale), (w, h)], (scale, scale), (inp, inp), 5)
    predictor = MagNetPredictor(plan, build_model("small", 5, seed=0), build_model("refinement", 5, seed=1))
    warm = np.zeros((1, inp, inp, 3), np.float32)
    jax.block_until_ready(predictor.stage0(warm))  # compile outside the timing
    t = time.perf_counter()
    scaled = ScaledImage(source, plan.scales[0], pyramid=pyramid)
    patch = kernels.stage0_input(scaled.read, plan)
    t_read = time.perf_counter() - t
    jax.block_until_ready(predictor.stage0(patch))
    return {"pyramid": pyramid, "level_read_hw": list(scaled.source.size_hw), "levels": len(source.levels),
            "read_s": round(t_read, 2), "stage0_s": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=40000)
    p.add_argument("--scale", type=int, default=1250, help="stage 0's scale (px)")
    p.add_argument("--input", type=int, default=256)
    p.add_argument("--work", default="/tmp/magnet_pyramid_bench")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = Path(args.work) / f"pyramid_{args.size}.tif"
    if not path.exists():
        t = time.perf_counter()
        write_pyramid(path, args.size)
        print(f"wrote {path} ({path.stat().st_size >> 20} MB) in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    for pyramid in (True, False):  # the level read first: its peak RSS is not the full-resolution one's
        print(json.dumps(time_stage0(path, args.scale, args.input, pyramid)), flush=True)


if __name__ == "__main__":
    main()
