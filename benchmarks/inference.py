"""MagNet inference speed on the parity pipelines' settings (sample images, synthetic weights).

    python benchmarks/inference.py                       # deepglobe_full and cityscapes_2stage_full
    python benchmarks/inference.py --cases deepglobe_full --repeats 5 --compat paper

Prints one JSON line per case: `case`, `device`, `run_s` (seconds per image once compiled, the median
of `--repeats` runs, preprocessing included, model set-up excluded), `compile_s` (first run minus
`run_s`: tracing + compilation, or loading from JAX's persistent compilation cache when it is warm),
`stages_s` (per-stage seconds of the median run), `cpu_s` (process CPU seconds per image, a
contention-independent figure on shared CPUs), `peak_rss_mb`, `cache_dir`.

Weights are rebuilt from the parity manifests (`$MAGNET_SHARED/parity`, default `../shared`) as in
the tests; without them the models keep their random initialisation (same speed).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def run_case(name: str, repeats: int, compat: str, batch: int) -> dict:
    import jax

    from magnet_jax.inference.engine import MagNetPredictor, enable_compilation_cache
    from magnet_jax.inference.plan import make_plan
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
    )
    predictor = MagNetPredictor(plan, backbone, refiners)
    image, image_path = _image(dataset, scales[-1])

    def once():
        t = time.perf_counter()
        c = time.process_time()
        res = predictor.predict(image)
        predictor.final_argmax(res)
        return time.perf_counter() - t, time.process_time() - c, res

    first_s, _, _ = once()
    runs = [once() for _ in range(max(1, repeats))]
    walls = [r[0] for r in runs]
    median = statistics.median_low(walls)
    best = runs[walls.index(median)]
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
        "cpu_s": round(statistics.median(r[1] for r in runs), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
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
    args = parser.parse_args()
    import jax

    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; expected one of {', '.join(CASES)}")
        print(json.dumps(run_case(name, args.repeats, args.compat, args.patch_batch_size)), flush=True)


if __name__ == "__main__":
    main()
