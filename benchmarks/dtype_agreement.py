"""`config.magnet.dtype=bfloat16` against float32: per-stage argmax agreement and speed, same process.

    python benchmarks/dtype_agreement.py                                    # the two cityscapes cases
    python benchmarks/dtype_agreement.py --cases deepglobe_full --synthetic 2 --device gpu

For each case of `benchmarks/inference.py` (parity weights, compat reference) two predictors are built,
float32 and bfloat16, and run on the case's sample image and on `--synthetic` images of the synthetic
dataset's test split (`magnet_jax.data.synthetic.generate_sample`, 1024 px). Prints one row per
(case, image, stage): the share of pixels whose argmax agrees with float32, then per case the
seconds per image of each mode (the second of two interleaved runs per image, median over images).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()  # before JAX allocates (MAGNET_JAX_ALLOCATOR=system: glibc's defaults)


def _predictors(name: str, batch: int):
    from inference import CASES, _load_weights

    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.models import build_model

    dataset, manifest, model, n, scales, crop, inp, n_patches, n_points, smooth, salts = CASES[name]
    backbone = build_model(model, n)
    _load_weights(backbone, manifest, "")
    refiners = []
    for salt in salts:
        ref = build_model("refinement", n)
        _load_weights(ref, f"refine_{n}", salt)
        refiners.append(ref)
    out = {}
    for dtype in ("float32", "bfloat16"):
        plan = make_plan(
            scales, crop, inp, n, n_patches=n_patches, n_points=n_points, smooth_kernel=smooth,
            compat="reference", patch_batch_size=batch, dtype=dtype,
        )
        out[dtype] = MagNetPredictor(plan, backbone, refiners)
    return dataset, scales, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="cityscapes_2stage_fast,cityscapes_2stage_full")
    p.add_argument("--synthetic", type=int, default=2, help="synthetic test-split images per case")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--patch-batch-size", type=int, default=0)
    args = p.parse_args()
    from harness import check_device, select_device

    select_device(args.device)
    check_device(args.device)
    import numpy as np
    from inference import _image

    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.data.synthetic import generate_sample

    enable_compilation_cache()
    print("case | image | stage | argmax agreement bf16 vs f32")
    print("--- | --- | --- | ---")
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        dataset, scales, preds = _predictors(name, args.patch_batch_size)
        sample, sample_path = _image(dataset, scales[-1])
        images = [(Path(sample_path).name, sample)]
        images += [(f"synthetic test {i}", generate_sample(0, "test", i)[0]) for i in range(args.synthetic)]
        seconds = {"float32": [], "bfloat16": []}
        for label, image in images:
            results = {}
            for _ in range(2):  # the second pass is timed (the first compiles)
                for dtype, pred in preds.items():
                    t = time.perf_counter()
                    results[dtype] = pred.predict(image)
                    seconds[dtype].append(time.perf_counter() - t)
            for a, b in zip(results["float32"].stages, results["bfloat16"].stages, strict=True):
                agree = float(np.mean(a.argmax == b.argmax))
                print(f"{name} | {label} | {a.index} | {100 * agree:.2f}%", flush=True)
        f32 = statistics.median(seconds["float32"][1::2])
        bf16 = statistics.median(seconds["bfloat16"][1::2])
        print(f"{name}: float32 {f32:.2f} s, bfloat16 {bf16:.2f} s per image (float32 / bfloat16 = {f32 / bf16:.2f}x)")


if __name__ == "__main__":
    main()
