"""Refiner training pairs per second for the DeepGlobe geometry, with 0, 1 and 2 grain workers.

    python benchmarks/data.py [--pairs 60] [--workers 0,1,2] [--images 4] [--json out.json]

Writes a few DeepGlobe-like samples (2448x2448 JPEG + RGB PNG mask with the challenge's colours) to a
temporary folder and times `make_train_loader(kind="refiner")` with the DeepGlobe config (scales
612/1224/2448, crop 612, input 508): read + decode JPEG and PNG, resize, crop, label decoding, batch of 1.
The original's PyTorch loader takes about 0.14 s per pair (7 pairs/s) in one process on this CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()  # before JAX allocates (MAGNET_JAX_ALLOCATOR=system: glibc's defaults)

from helpers.fakes import blob_label, fake_photo  # noqa: E402  (tests/helpers: fake data in the real layouts)

from magnet_jax.data import build_source, make_train_loader  # noqa: E402
from magnet_jax.data.datasets.deepglobe import COLORS as DEEPGLOBE_COLORS  # noqa: E402
from magnet_jax.data.lists import write_file_list  # noqa: E402
from magnet_jax.data.sample_spec import LoaderSpec, RefinerPairSpec  # noqa: E402


def write_samples(root: str, n: int, size: int = 2448) -> str:
    rng = np.random.default_rng(0)
    colors = np.asarray(DEEPGLOBE_COLORS, np.uint8)
    os.makedirs(os.path.join(root, "land-train"), exist_ok=True)
    pairs = []
    for i in range(n):
        label = blob_label(rng, size, size, list(range(7)), n_blobs=40)
        image = fake_photo(rng, size, size, label, noise=8.0)
        img_rel, mask_rel = f"land-train/{i}_sat.jpg", f"land-train/{i}_mask.png"
        cv2.imwrite(os.path.join(root, img_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(os.path.join(root, mask_rel), cv2.cvtColor(colors[label], cv2.COLOR_RGB2BGR))
        pairs.append((img_rel, mask_rel))
    lists = os.path.join(root, "train.txt")
    write_file_list(lists, pairs)
    return lists


def deepglobe_config(root: str, lists: str):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
    from deepglobe import get_config

    c = get_config()
    c.data.root = root
    c.data.train_list = lists
    return c


def pairs_per_second(config, source, workers: int, pairs: int, warmup: int) -> tuple[float, float]:
    """(pairs per second of wall time, CPU ms of this process per pair: all the work when workers == 0)."""
    loader = make_train_loader(RefinerPairSpec.from_config(config),
                               LoaderSpec(batch_size=1, seed=0, workers=workers), source)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(pairs):
        batch = next(it)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert batch["fine_image"].shape == (1, 508, 508, 3) and batch["label"].shape == (1, 508, 508)
    del it
    return pairs / elapsed, 1000 * cpu / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        lists = write_samples(root, args.images)
        print(f"wrote {args.images} samples 2448x2448 in {time.perf_counter() - t:.1f} s "
              f"(JPEG {os.path.getsize(os.path.join(root, 'land-train/0_sat.jpg')) / 1e6:.1f} MB)")
        config = deepglobe_config(root, lists)
        source = build_source(config, "train")
        for w in (int(v) for v in args.workers.split(",")):
            rate, cpu_ms = pairs_per_second(config, source, w, args.pairs, args.warmup)
            results[w] = {"pairs_per_second": rate, "main_process_cpu_ms_per_pair": cpu_ms}
            print(f"workers={w}: {rate:.1f} pairs/s ({1000 / rate:.0f} ms per pair; main process CPU "
                  f"{cpu_ms:.0f} ms per pair)", flush=True)
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (other processes slow every number down)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"workers": results, "cpu_count": os.cpu_count(), "load_average": load}, f, indent=1)


if __name__ == "__main__":
    main()
