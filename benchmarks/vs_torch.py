"""The original's models in PyTorch against magnet-jax, side by side on this CPU (DeepGlobe geometry).

    python benchmarks/vs_torch.py                  # fpn@508 and refiner@508, torch vs magnet-jax
    python benchmarks/vs_torch.py --pipeline       # also magnet-jax's whole deepglobe_full image

The original is not on this machine, so its pipeline cannot be timed here. What can be: its two
models in its own framework (PyTorch, `--threads` intra-op threads, eval, inference mode, batch 1 as
its demo runs them), rebuilt in `benchmarks/torch_reference.py` from the spec and checked against the
original's module fixtures before timing (max relative error printed). The original's deepglobe_full
runs 21 backbone and 20 refiner passes per image (1 + 4 + 16 patches), so

    original_models_s = 21 x fpn_torch + 20 x refiner_torch

is a measured lower bound of the original's time per image on this CPU: its other steps (OpenCV
resizes, RoI Align, median filter, point sampling) only add. `original_est_s` scales it by the share
the models had in the original's own measured time on the reference CPU (issue 14: 44.3 s per image,
its models 21 x 518 + 20 x 1171 ms there): an estimate, marked as such.

The two frameworks run in alternating blocks of `--runs` calls (medians over all blocks) in one
process under magnet-jax's allocator setting, which helps torch's page faults too (conservative).
magnet-jax's models run ~1.3x slower here than alone (`benchmarks/models.py`) next to torch's idle
threads; its pipeline (`--pipeline`) is timed after torch's last call.
Needs torch (requirements-dev.txt) and the parity fixtures (`$MAGNET_SHARED`, default ../shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from magnet_jax.runtime import configure_allocator  # noqa: E402

configure_allocator()

# deepglobe_full per image: backbone passes (1 + 4 + 16 patches) and refiner passes (4 + 16).
BACKBONE_PASSES, REFINER_PASSES = 21, 20
# The original on the reference CPU (issue 14, benchmarks/models.py): whole image and one pass of each model.
REFERENCE_ORIGINAL_S, REFERENCE_FPN_MS, REFERENCE_REFINER_MS = 44.3, 518.0, 1171.0


def _shared() -> Path:
    return Path(os.environ.get("MAGNET_SHARED", REPO.parent / "shared"))


def _jax_forward(name: str, conv_algorithm: str):
    """A compiled magnet-jax forward of the parity model `fpn_7` / `refine_7` and its NHWC inputs."""
    import jax
    import numpy as np
    from flax import nnx
    from inference import _load_weights

    from magnet_jax.models import build_model
    from magnet_jax.ops.conv import forward_algorithm

    model = build_model("fpn" if name == "fpn_7" else "refinement", 7)
    if not _load_weights(model, name, ""):
        raise SystemExit(f"vs_torch: no parity manifests under {_shared() / 'parity'} (set MAGNET_SHARED)")
    graphdef, state = nnx.split(model)
    inputs = [np.transpose(x, (0, 2, 3, 1)) for x in _inputs(name)]

    def forward(state, *xs):
        return nnx.merge(graphdef, state)(*xs)

    with forward_algorithm(conv_algorithm):
        compiled = jax.jit(forward).lower(state, *inputs).compile()
    return lambda: jax.block_until_ready(compiled(state, *inputs))


def _inputs(name: str):
    """Batch-1 NCHW inputs at 508x508: a normalised-image-like tensor, or two probability maps."""
    import numpy as np

    rng = np.random.default_rng(0)
    if name == "fpn_7":
        return [rng.standard_normal((1, 3, 508, 508), dtype=np.float32)]
    logits = rng.standard_normal((2, 1, 7, 508, 508), dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return [probs[0], probs[1]]


def _torch_forward(model, xs):
    """A no-argument call of the torch `model` on `xs` (inference mode)."""
    import torch

    def call():
        with torch.inference_mode():
            return model(*xs)

    return call


def _time_blocks(calls: dict, runs: int, rounds: int) -> dict[str, list[float]]:
    """Milliseconds per call: `rounds` x (each callable `runs` times in a block, then the next)."""
    times = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            fn()  # untimed: let the other framework's threads go idle
            for _ in range(runs):
                t = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="calls per block")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per framework")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the original: 2)")
    parser.add_argument("--pipeline", action="store_true", help="also time magnet-jax's deepglobe_full image")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs (with --pipeline)")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("vs_torch: needs torch (pip install -r requirements-dev.txt)") from None
    from torch_reference import check_against_fixtures, load_parity_model

    torch.set_num_threads(args.threads)
    shared = _shared()
    if not (shared / "parity" / "modules").is_dir():
        raise SystemExit(f"vs_torch: no parity fixtures under {shared / 'parity'} (set MAGNET_SHARED)")
    models = {name: load_parity_model(name, shared) for name in ("fpn_7", "refine_7")}
    errors = check_against_fixtures(models, shared)
    rows = []
    for name in ("fpn_7", "refine_7"):
        xs = [torch.from_numpy(x) for x in _inputs(name)]
        calls = {
            "torch": _torch_forward(models[name], xs),
            "jax_direct": _jax_forward(name, "direct"),
            "jax_auto": _jax_forward(name, "auto"),
        }
        times = _time_blocks(calls, args.runs, args.rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"model": name, "input": "508x508", "batch": 1, "torch_threads": args.threads}
        row.update({f"{k}_ms": round(v, 1) for k, v in med.items()})
        row.update({f"torch_over_{k}": round(med["torch"] / med[k], 2) for k in ("jax_direct", "jax_auto")})
        row["fixture_rel_err"] = errors[name]
        rows.append(row)
        print(json.dumps(row), flush=True)
    fpn, ref = (r["torch_ms"] for r in rows)
    models_s = (BACKBONE_PASSES * fpn + REFINER_PASSES * ref) / 1e3
    share = (BACKBONE_PASSES * REFERENCE_FPN_MS + REFINER_PASSES * REFERENCE_REFINER_MS) / 1e3 / REFERENCE_ORIGINAL_S
    summary = {
        "case": "deepglobe_full",
        "original_models_s": round(models_s, 2),
        "models_share_on_reference_cpu": round(share, 3),
        "original_est_s": round(models_s / share, 2),
    }
    if args.pipeline:
        from inference import run_case

        result = run_case("deepglobe_full", args.repeats, "reference", 0)
        summary.update(
            magnet_jax_run_s=result["run_s"],
            magnet_jax_stages_s=result["stages_s"],
            speedup_lower_bound=round(models_s / result["run_s"], 2),
            speedup_est=round(models_s / share / result["run_s"], 2),
        )
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
