"""MagNet inference speed on the parity pipelines' settings (sample images, synthetic weights).

    python benchmarks/inference.py                       # deepglobe_full and cityscapes_2stage_full
    python benchmarks/inference.py --cases deepglobe_full --repeats 5 --compat paper
    python benchmarks/inference.py --device gpu          # per-image latency and peak memory on a GPU
    python benchmarks/inference.py --dtype bfloat16      # the opt-in fast mode (config.magnet.dtype)

Prints one JSON line per case: `case`, `device`, `run_s` (seconds per image once compiled, the median
of `--repeats` runs, preprocessing included, model set-up excluded), `compile_s` (first run minus
`run_s`: tracing + compilation, or loading from JAX's persistent compilation cache when it is warm),
`stages_s` (per-stage seconds of the median run), `cpu_s` (process CPU seconds per image, a
contention-independent figure on shared CPUs), `peak_rss_mb`, `device_peak_mb` (GPU: the device's
peak memory, preallocation off; null on CPU), `cache_dir`, and the floor:

- `gflop` / `stages_gflop`: XLA's cost analysis of the stage functions (every sub-batch counted) with
  direct convolutions, the models' FLOPs; `executed_gflop` the same for the run's `--conv-algorithm`
  (Winograd's 3x3 convolutions do fewer);
- `peak_gflops`: one large matrix product timed in the same process (the best of 3, before and after
  the case; float32 at the highest precision, or bf16 inputs with float32 accumulation);
- `floor_s = gflop / peak_gflops` and `run_over_floor = run_s / floor_s` (1.0 would be every FLOP at
  the product's speed); `cpu_floor_s` / `cpu_over_floor` the same per process-CPU-second (CPU only);
- `original_s`, `speedup_vs_original`: the original's time on the project's reference 2-core CPU
  (Intel, AVX-512; measured there, not in this run: compare on that machine only).

Weights are rebuilt from the parity manifests (`$MAGNET_SHARED/parity`, default `shared/parity`
beside the repository folder) as in the tests; without them the models keep their random initialisation (same speed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()  # before JAX allocates (MAGNET_JAX_ALLOCATOR=system: glibc's defaults)

CASES = {
    # name: (dataset, backbone manifest, model, classes, scales, crop, input, n_patches, n_points, smooth, salts)
    "deepglobe_full": (
        "deepglobe",
        "fpn_7",
        "fpn",
        7,
        [(612, 612), (1224, 1224), (2448, 2448)],
        (612, 612),
        (508, 508),
        -1,
        0.75,
        11,
        ["dg/"],
    ),
    "cityscapes_2stage_full": (
        "cityscapes",
        "hrnet18_ocr_19",
        "hrnet18+ocr",
        19,
        [(256, 128), (512, 256)],
        (256, 128),
        (256, 128),
        -1,
        32768,
        5,
        ["cs1/"],
    ),
    "cityscapes_2stage_fast": (
        "cityscapes",
        "hrnet18_ocr_19",
        "hrnet18+ocr",
        19,
        [(256, 128), (512, 256)],
        (256, 128),
        (256, 128),
        2,
        0.9,
        5,
        ["cs1/"],
    ),
}
# The original PyTorch MagNet on the project's reference CPU (Intel Xeon, AVX-512, 2 cores), seconds per image.
ORIGINAL_S = {"deepglobe_full": 44.3, "cityscapes_2stage_full": 9.85}
SAMPLES = {"deepglobe": "639004_sat.jpg", "cityscapes": "frankfurt_000001_003056_leftImg8bit.png"}


def _shared() -> Path:
    return Path(os.environ.get("MAGNET_SHARED", REPO.parent / "shared"))


def _load_weights(model, manifest: str, salt: str) -> bool:
    parity = _shared() / "parity"
    if not (parity / "manifests" / f"{manifest}.json").exists():
        return False
    import numpy as np

    from magnet_jax.models.state_dict import load_state_dict

    sys.path.insert(0, str(parity))
    from synth_weights import synth_state_dict

    man = json.loads((parity / "manifests" / f"{manifest}.json").read_text())
    bn = dict(np.load(parity / "bn_stats" / f"{manifest}.npz"))
    load_state_dict(model, synth_state_dict(man, salt, bn), source=manifest)
    return True


def _image(dataset: str, size_wh):
    import numpy as np

    from magnet_jax.preprocess import read_image_rgb

    path = _shared() / "samples" / SAMPLES[dataset]
    if path.exists():
        return read_image_rgb(str(path)), str(path)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (size_wh[1], size_wh[0], 3), dtype=np.uint8), "random"


def run_case(
    name: str, repeats: int, compat: str, batch: int, dtype: str = "float32", conv_algorithm: str = "auto"
) -> dict:
    import jax
    from harness import device_peak_mb, peak_gflops

    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.inference.cost import stage_gflops
    from magnet_jax.inference.plan import make_plan
    from magnet_jax.inference.predictor import MagNetPredictor
    from magnet_jax.models import build_model

    cache = enable_compilation_cache()
    dataset, manifest, model, n, scales, crop, inp, n_patches, n_points, smooth, salts = CASES[name]
    backbone = build_model(model, n)
    synthetic = _load_weights(backbone, manifest, "")
    refiners = []
    for salt in salts:
        ref = build_model("refinement", n)
        _load_weights(ref, f"refine_{n}", salt)
        refiners.append(ref)
    plan = make_plan(
        scales,
        crop,
        inp,
        n,
        n_patches=n_patches,
        n_points=n_points,
        smooth_kernel=smooth,
        compat=compat,
        patch_batch_size=batch,
        dtype=dtype,
        conv_algorithm=conv_algorithm,
    )
    predictor = MagNetPredictor(plan, backbone, refiners)
    # The floor counts the models' FLOPs as direct convolutions (Winograd executes fewer: `executed_gflop`).
    direct = dataclasses.replace(plan, conv_algorithm="direct")
    stages_gflop = stage_gflops(MagNetPredictor(direct, backbone, refiners))
    executed = stages_gflop if conv_algorithm == "direct" else stage_gflops(predictor)
    peaks = [peak_gflops(dtype)]
    image, image_path = _image(dataset, scales[-1])

    def once():
        t = time.perf_counter()
        c = time.process_time()
        res = predictor.predict(image)
        predictor.final_argmax(res)
        return time.perf_counter() - t, time.process_time() - c, res

    first_s, _, _ = once()
    runs = [once() for _ in range(max(1, repeats))]
    peaks.append(peak_gflops(dtype))
    walls = [r[0] for r in runs]
    median = statistics.median_low(walls)
    best = runs[walls.index(median)]
    cpu_s = statistics.median(r[1] for r in runs)
    gflop = sum(stages_gflop)
    peak = max(p["wall"] for p in peaks)
    floor_s = gflop / peak
    on_cpu = jax.default_backend() == "cpu"
    cpu_floor_s = gflop / max(p["cpu"] for p in peaks) if on_cpu else None
    original = ORIGINAL_S.get(name) if on_cpu and dtype == "float32" else None
    return {
        "case": name,
        "compat": compat,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "run_s": round(median, 3),
        "run_min_s": round(min(walls), 3),
        "compile_s": round(max(0.0, first_s - median), 3),
        "first_run_s": round(first_s, 3),
        "stages_s": {k: round(v, 3) for k, v in best[2].timings.items()},
        "cpu_s": round(cpu_s, 3),
        "dtype": dtype,
        "conv_algorithm": conv_algorithm,
        "gflop": round(gflop, 1),
        "executed_gflop": round(sum(executed), 1),
        "stages_gflop": [round(g, 1) for g in stages_gflop],
        "peak_gflops": round(peak, 1),
        "floor_s": round(floor_s, 3),
        "run_over_floor": round(median / floor_s, 2),
        "cpu_floor_s": None if cpu_floor_s is None else round(cpu_floor_s, 3),
        "cpu_over_floor": None if cpu_floor_s is None else round(cpu_s / cpu_floor_s, 2),
        "original_s": original,
        "speedup_vs_original": None if original is None else round(original / median, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "device_peak_mb": device_peak_mb(),
        "repeats": len(runs),
        "synthetic_weights": synthetic,
        "image": image_path,
        "cache_dir": cache,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases", default="deepglobe_full,cityscapes_2stage_full", help=f"comma-separated, from {', '.join(CASES)}"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compat", default="reference", choices=["reference", "paper"])
    parser.add_argument("--patch-batch-size", type=int, default=0, help="0: auto (1 on CPU, 8 on GPU)")
    parser.add_argument("--precision", default="", help="jax default_matmul_precision, e.g. 'highest' on GPUs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="gpu: no memory preallocation")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="config.magnet.dtype")
    parser.add_argument(
        "--conv-algorithm", default="auto", choices=["auto", "direct", "winograd"], help="config.magnet.conv_algorithm"
    )
    args = parser.parse_args()
    from harness import check_device, select_device

    select_device(args.device)
    check_device(args.device)
    import jax

    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; expected one of {', '.join(CASES)}")
        result = run_case(name, args.repeats, args.compat, args.patch_batch_size, args.dtype, args.conv_algorithm)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
