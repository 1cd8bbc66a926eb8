"""The original's models in PyTorch against magnet-jax, side by side on this CPU.

    python benchmarks/vs_torch.py                  # both cases' models, torch vs magnet-jax
    python benchmarks/vs_torch.py --pipeline       # also magnet-jax's whole image of each case
    python benchmarks/vs_torch.py --torch-allocators system,tuned --pipeline   # both torch heaps

The original is not on this machine, so its pipeline cannot be timed here. What can be: its models
in its own framework (PyTorch, `--threads` intra-op threads, eval, inference mode, batch 1 as its
demo runs them), rebuilt in `torch_reference.py` / `torch_hrnet.py` from the spec and checked against
the original's module fixtures before timing (max relative error printed). Per image the original
runs, for deepglobe_full, 21 fpn and 20 refiner passes at 508x508 (1 + 4 + 16 patches) and, for
cityscapes_2stage_full, 5 HRNet18+OCR and 4 refiner passes at 128x256 (1 + 4 patches), so

    original_models_s = backbone_passes x backbone_torch + refiner_passes x refiner_torch

is a measured lower bound of the original's time per image on this CPU: its other steps (OpenCV
resizes, RoI Align, median filter, point sampling) only add. For deepglobe_full, `original_est_s`
scales it by the share the models had in the original's own measured time on the reference CPU
(44.3 s per image, its models 21 x 518 + 20 x 1171 ms there): an estimate, marked as such.

Each framework runs in a process of its own (`--worker`), in alternating rounds: a torch process
per torch heap times the torch models, then a magnet-jax process its models (`direct` and `auto`),
then, with `--pipeline`, a magnet-jax process each case's whole image; medians over all rounds. In
one shared process torch's idle threads slowed XLA's models ~1.3x, which is why they are kept apart.
The torch heap: `system` is glibc's default, as the original runs; `tuned` is magnet-jax's allocator
setting (`magnet_jax/allocator.py`), which spares torch's page zeroing too (the faster, conservative
side for the lower bound). magnet-jax's processes always run with its own setting.
Needs torch (requirements-dev.txt) and the parity fixtures (`$MAGNET_SHARED/parity`, default `shared/parity`
beside the repository folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from inference import CASES as PIPELINE_CASES  # noqa: E402
from inference import ORIGINAL_S  # noqa: E402

from magnet_jax.allocator import configure_allocator  # noqa: E402

# The original's model passes per image, (backbone, refiner): 1 + 4 + 16 and 1 + 4 patches.
PASSES = {"deepglobe_full": (21, 20), "cityscapes_2stage_full": (5, 4)}


def _case(name: str) -> tuple:
    """(backbone manifest, magnet-jax backbone, refiner manifest, classes, input (H, W), passes) of a case."""
    _, manifest, jax_name, n, _, _, (w, h), *_ = PIPELINE_CASES[name]
    return manifest, jax_name, f"refine_{n}", n, (h, w), PASSES[name]


CASES = {name: _case(name) for name in PASSES}
# One pass of each DeepGlobe model of the original on the reference CPU (benchmarks/models.py);
# cityscapes' models were not timed there, so it gets the lower bound only.
REFERENCE_FPN_MS, REFERENCE_REFINER_MS = 518.0, 1171.0


def _shared() -> Path:
    return Path(os.environ.get("MAGNET_SHARED", REPO.parent / "shared"))


def _models() -> list[tuple]:
    """[(case, manifest, magnet-jax model name, classes, (H, W))] of every model timed."""
    out = []
    for case, (backbone, jax_name, refiner, n, hw, _) in CASES.items():
        out += [(case, backbone, jax_name, n, hw), (case, refiner, "refinement", n, hw)]
    return out


def _inputs(manifest: str, n: int, hw: tuple[int, int]):
    """Batch-1 NCHW inputs: a normalised-image-like `[1, 3, H, W]`, or two `[1, n, H, W]` probability maps."""
    import numpy as np

    rng = np.random.default_rng(0)
    if not manifest.startswith("refine"):
        return [rng.standard_normal((1, 3, *hw), dtype=np.float32)]
    logits = rng.standard_normal((2, 1, n, *hw), dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return [probs[0], probs[1]]


def _jax_forward(manifest: str, jax_name: str, n: int, hw: tuple[int, int], conv_algorithm: str):
    """A no-argument call of the compiled magnet-jax forward of parity model `manifest` on NHWC inputs."""
    import jax
    import numpy as np
    from flax import nnx
    from inference import _load_weights

    from magnet_jax.models import build_model
    from magnet_jax.ops.conv import forward_algorithm

    model = build_model(jax_name, n)
    if not _load_weights(model, manifest, ""):
        raise SystemExit(f"vs_torch: no parity manifests under {_shared() / 'parity'} (set MAGNET_SHARED)")
    graphdef, state = nnx.split(model)
    inputs = [np.transpose(x, (0, 2, 3, 1)) for x in _inputs(manifest, n, hw)]

    def forward(state, *xs):
        return nnx.merge(graphdef, state)(*xs)

    with forward_algorithm(conv_algorithm):
        compiled = jax.jit(forward).lower(state, *inputs).compile()
    return lambda: jax.block_until_ready(compiled(state, *inputs))


def _torch_model(manifest: str, n: int):
    """The torch re-expression of parity model `manifest` with its fixture weights, in eval mode."""
    from torch_hrnet import HRNet18OCR
    from torch_reference import RefinementMagNet, ResnetFPN, load_parity_weights

    model = {"fpn": ResnetFPN, "refine": RefinementMagNet, "hrnet18": HRNet18OCR}[manifest.split("_")[0]](n)
    return load_parity_weights(model, manifest, _shared())


def _time_calls(calls: dict, runs: int) -> dict[str, list[float]]:
    """Milliseconds per call of each callable, `runs` times after one untimed call."""
    times = {}
    for key, fn in calls.items():
        fn()
        times[key] = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) * 1e3)
    return times


def _torch_worker(runs: int, threads: int, heap: str) -> dict:
    """{manifest: {"torch_<heap>": [ms...]}, "fixture_rel_err": {...}} from this (torch-only) process."""
    try:
        import torch
    except ImportError:
        raise SystemExit("vs_torch: needs torch (pip install -r requirements-dev.txt)") from None
    from torch_reference import check_against_fixtures

    torch.set_num_threads(threads)
    models = {m: _torch_model(m, n) for _, m, _, n, _ in _models()}
    out = {"fixture_rel_err": check_against_fixtures(models, _shared())}
    with torch.inference_mode():
        for _, m, _, n, hw in _models():
            xs = [torch.from_numpy(x) for x in _inputs(m, n, hw)]
            out[m] = _time_calls({f"torch_{heap}": lambda model=models[m], xs=xs: model(*xs)}, runs)
    return out


def _jax_worker(runs: int) -> dict:
    """{manifest: {"jax_direct": [ms...], "jax_auto": [ms...]}} from this (JAX-only) process."""
    out = {}
    for _, m, jax_name, n, hw in _models():
        calls = {f"jax_{a}": _jax_forward(m, jax_name, n, hw, a) for a in ("direct", "auto")}
        out[m] = _time_calls(calls, runs)
    return out


def _pipeline_worker(repeats: int) -> dict:
    """{case: run_s, stages, cpu and floor of magnet-jax's whole image} from this process."""
    from inference import run_case

    keys = ("run_s", "run_min_s", "stages_s", "cpu_s", "floor_s", "run_over_floor")
    out = {}
    for case in CASES:
        result = run_case(case, repeats, "reference", 0)
        out[case] = {k: result[k] for k in keys}
    return out


def _spawn(worker: str, args: argparse.Namespace, heap: str = "") -> dict:
    """Runs this script as `--worker worker` in a fresh process and returns the JSON it prints last.

    The torch worker gets `heap`; magnet-jax's workers the caller's allocator setting (default tuned)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if worker == "torch":
        env["MAGNET_JAX_ALLOCATOR"] = heap
    cmd = [sys.executable, __file__, "--worker", worker, "--runs", str(args.runs), "--threads", str(args.threads)]
    cmd += ["--repeats", str(args.repeats), "--torch-allocators", heap or "tuned"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"vs_torch: the {worker} process failed (rc {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _models_s(med: dict, case: str, heap: str) -> float:
    """The original's model passes per image of `case`, in seconds, from torch medians `med` [ms]."""
    backbone, _, refiner, _, _, (n_backbone, n_refiner) = CASES[case]
    return (n_backbone * med[backbone][f"torch_{heap}"] + n_refiner * med[refiner][f"torch_{heap}"]) / 1e3


def _summaries(med: dict, heaps: list[str], rounds: list[tuple[dict, dict]]) -> list[dict]:
    """Per case and torch heap: the original's models lower bound, its estimate and the speedups.

    `rounds`: (torch medians, magnet-jax pipeline) of each round; the speedup of each round compares
    processes that ran minutes apart, so the machine's drift between rounds cancels in it."""
    n_backbone, n_refiner = PASSES["deepglobe_full"]
    share = (n_backbone * REFERENCE_FPN_MS + n_refiner * REFERENCE_REFINER_MS) / 1e3 / ORIGINAL_S["deepglobe_full"]
    out = []
    for case in CASES:
        run_s = statistics.median(p[case]["run_s"] for _, p in rounds) if rounds else None
        for heap in heaps:
            models_s = _models_s(med, case, heap)
            row = {"case": case, "torch_heap": heap, "passes": list(CASES[case][5])}
            row.update(original_models_s=round(models_s, 2), original_on_reference_cpu_s=ORIGINAL_S[case])
            if case == "deepglobe_full":
                row.update(models_share_on_reference_cpu=round(share, 3), original_est_s=round(models_s / share, 2))
            if run_s is not None:
                row.update(magnet_jax_run_s=round(run_s, 3), speedup_lower_bound=round(models_s / run_s, 2))
                per_round = [_models_s(m, case, heap) / p[case]["run_s"] for m, p in rounds]
                row["speedup_lower_bound_per_round"] = [round(x, 2) for x in per_round]
                if "original_est_s" in row:
                    row["speedup_est"] = round(row["original_est_s"] / run_s, 2)
                    row["speedup_est_per_round"] = [round(x / share, 2) for x in per_round]
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per model per process")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of one process per framework")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the original: 2)")
    parser.add_argument("--pipeline", action="store_true", help="also time magnet-jax's whole image of each case")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs per case and round (with --pipeline)")
    parser.add_argument(
        "--torch-allocators", default="tuned", help="comma-separated torch heaps: tuned (magnet-jax's), system (glibc)"
    )
    parser.add_argument("--worker", default="", choices=["", "torch", "jax", "pipeline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    heaps = [h.strip() for h in args.torch_allocators.split(",") if h.strip()]
    if not heaps or any(h not in ("tuned", "system") for h in heaps):
        raise SystemExit(f"vs_torch: --torch-allocators: expected tuned and/or system, got {args.torch_allocators!r}")
    for flag in ("runs", "rounds", "threads", "repeats"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"vs_torch: --{flag}: expected a positive integer, got {getattr(args, flag)}")
    if args.worker:
        configure_allocator()
        run = {"torch": lambda: _torch_worker(args.runs, args.threads, heaps[0]), "jax": lambda: _jax_worker(args.runs)}
        run["pipeline"] = lambda: _pipeline_worker(args.repeats)
        print(json.dumps(run[args.worker]()), flush=True)
        return
    if not (_shared() / "parity" / "modules").is_dir():
        raise SystemExit(f"vs_torch: no parity fixtures under {_shared() / 'parity'} (set MAGNET_SHARED)")
    times = {m: {} for _, m, _, _, _ in _models()}
    errors, rounds = {}, []
    for r in range(args.rounds):
        round_times = {m: {} for m in times}
        for worker, heap in [("torch", h) for h in heaps] + [("jax", "")]:
            print(f"# round {r + 1}/{args.rounds}: {worker} {heap}".rstrip(), file=sys.stderr, flush=True)
            out = _spawn(worker, args, heap)
            errors.update(out.pop("fixture_rel_err", {}))
            for m, by_key in out.items():
                for key, ms in by_key.items():
                    times[m].setdefault(key, []).extend(ms)
                    round_times[m][key] = statistics.median(ms)
        if args.pipeline:
            print(f"# round {r + 1}/{args.rounds}: pipeline", file=sys.stderr, flush=True)
            rounds.append((round_times, _spawn("pipeline", args)))
    med = {m: {k: statistics.median(v) for k, v in by_key.items()} for m, by_key in times.items()}
    model_rows = []
    for case, m, _, _, (h, w) in _models():
        row = {"case": case, "model": m, "input": f"{h}x{w}", "batch": 1, "torch_threads": args.threads}
        row.update({f"{k}_ms": round(v, 1) for k, v in med[m].items()})
        for heap in heaps:
            for a in ("direct", "auto"):
                row[f"torch_{heap}_over_jax_{a}"] = round(med[m][f"torch_{heap}"] / med[m][f"jax_{a}"], 2)
        row["fixture_rel_err"] = errors[m]
        model_rows.append(row)
    summaries = _summaries(med, heaps, rounds)
    for row in model_rows + summaries + [{"magnet_jax_round": p} for _, p in rounds]:
        print(json.dumps(row), flush=True)
    print(_table(model_rows, summaries, heaps))


def _table(model_rows: list[dict], summaries: list[dict], heaps: list[str]) -> str:
    """Markdown: median ms per model and framework, then the original's passes against magnet-jax's image."""
    keys = [f"torch_{h}_ms" for h in heaps] + ["jax_direct_ms", "jax_auto_ms"]
    lines = ["| model | input | " + " | ".join(keys) + " | fixture rel. err |", "|---" * (len(keys) + 3) + "|"]
    for r in model_rows:
        cells = [r["model"], r["input"], *(f"{r[k]:.1f}" for k in keys), f"{r['fixture_rel_err']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| case | torch heap | original passes s | estimate s | magnet-jax s | lower bound per round |"]
    lines.append("|---" * 6 + "|")
    for r in summaries:
        per_round = ", ".join(f"{x:.2f}" for x in r.get("speedup_lower_bound_per_round", [])) or "(--pipeline)"
        cells = [r["case"], r["torch_heap"], f"{r['original_models_s']:.2f}", str(r.get("original_est_s", "-"))]
        lines.append("| " + " | ".join([*cells, str(r.get("magnet_jax_run_s", "-")), per_round]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
