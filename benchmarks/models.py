"""Forward latency and compile time of every model, against the original's CPU numbers.

Run by hand (never a test); it prints one table row per (model, input, batch):

    python benchmarks/models.py                                  # everything, batch 1 and 8
    python benchmarks/models.py --models refinement --batch 1    # quick check
    python benchmarks/models.py --models fpn psp --batch 1 8 --runs 10 --precision highest
    python benchmarks/models.py --cpus 2                         # pin to 2 cores, like the reference

Latency is the median wall time of `--runs` calls of the jitted forward pass (after
compilation and `--warmup` untimed calls), `block_until_ready` included; compile time
is `jit(...).lower(...).compile()`. Weights are random (timing does not depend on them).
The "original" column is the PyTorch original's eval forward on this project's CPU
(2 threads, batch 1, median); compare it with rows measured on the same CPU (`--cpus 2`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()  # before JAX allocates (MAGNET_JAX_ALLOCATOR=system: glibc's defaults)

# (name, model, W, H, classes, original ms: PyTorch, CPU, 2 threads, batch 1, median)
CASES = (
    ("fpn@508", "fpn", 508, 508, 7, 518.0),
    ("psp@508", "psp", 508, 508, 7, 685.0),
    ("hrnet18+ocr@256x128", "hrnet18+ocr", 256, 128, 19, 1896.0),
    ("hrnet48+ocr@256x128", "hrnet48+ocr", 256, 128, 19, None),
    ("refinement@508 (7)", "refinement", 508, 508, 7, 1171.0),
    ("refinement@256x128 (19)", "refinement", 256, 128, 19, 77.0),
)
MODELS = ("fpn", "psp", "hrnet18+ocr", "hrnet48+ocr", "refinement")
PRECISIONS = ("default", "high", "highest", "bfloat16")


@dataclass
class Row:
    case: str
    model: str
    input_wxh: str
    classes: int
    batch: int
    precision: str
    compile_s: float
    median_ms: float
    min_ms: float
    ms_per_image: float
    original_ms: float | None
    device: str


def _parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        help=f"models to time (space- or comma-separated) from {', '.join(MODELS)}; "
        "'refinement' times both of its inputs (508x508 with 7 classes, 256x128 with 19)",
    )
    p.add_argument("--batch", nargs="+", type=int, default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--runs", type=int, default=5, help="timed calls per row; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after compiling (default 1)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="default",
        help="default|high|highest: jax.default_matmul_precision for convolutions and matmuls (TF32 vs "
        "float32 on GPU; no effect on CPU). bfloat16: activations in bfloat16 (weights stay float32).",
    )
    p.add_argument("--cpus", type=int, default=0, help="pin the process to this many CPU cores first (Linux)")
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    args.models = [m.strip() for item in args.models for m in item.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if min(args.batch) < 1 or args.runs < 1 or args.warmup < 0:
        p.error("--batch and --runs must be >= 1, --warmup >= 0")
    return args


def _time_case(case, batch: int, args) -> Row:
    import contextlib

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from magnet_jax.models import build_model

    label, name, w, h, classes, original = case
    model = build_model(name, classes)
    graphdef, state = nnx.split(model)
    dtype = jnp.bfloat16 if args.precision == "bfloat16" else jnp.float32
    rng = np.random.default_rng(0)
    if name == "refinement":
        logits = rng.standard_normal((2, batch, h, w, classes), np.float32)
        inputs = tuple(jnp.asarray(jax.nn.softmax(x, axis=-1), dtype) for x in logits)  # (fine, coarse)
    else:
        inputs = (jnp.asarray(rng.standard_normal((batch, h, w, 3), np.float32), dtype),)

    @jax.jit
    def forward(state, *xs):
        return nnx.merge(graphdef, state)(*xs)

    precision = (
        jax.default_matmul_precision(args.precision)
        if args.precision in ("high", "highest")
        else contextlib.nullcontext()
    )
    with precision:
        t0 = time.perf_counter()
        compiled = forward.lower(state, *inputs).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            jax.block_until_ready(compiled(state, *inputs))
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(state, *inputs))
            times.append((time.perf_counter() - t0) * 1e3)
    median = statistics.median(times)
    return Row(
        case=label,
        model=name,
        input_wxh=f"{w}x{h}",
        classes=classes,
        batch=batch,
        precision=args.precision,
        compile_s=compile_s,
        median_ms=median,
        min_ms=min(times),
        ms_per_image=median / batch,
        original_ms=original,
        device=str(jax.devices()[0].device_kind),
    )


def _print_table(rows: list[Row]) -> None:
    headers = ("case", "batch", "compile s", "median ms", "min ms", "ms/image", "original b1 ms", "x original")
    lines = []
    for r in rows:
        speedup = f"{r.original_ms / r.median_ms:.2f}" if r.original_ms and r.batch == 1 else "-"
        lines.append(
            (
                r.case,
                str(r.batch),
                f"{r.compile_s:.1f}",
                f"{r.median_ms:.1f}",
                f"{r.min_ms:.1f}",
                f"{r.ms_per_image:.1f}",
                f"{r.original_ms:.0f}" if r.original_ms else "-",
                speedup,
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(fmt(headers))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt(line))


def main(argv=None) -> int:
    args = _parse_args(argv)
    if args.cpus > 0:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])  # before jax starts its threads
    import jax

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {cpus} CPU core(s) usable, "
        f"precision {args.precision}, median of {args.runs} run(s) after {args.warmup} warm-up call(s)"
    )
    print("original: PyTorch MagNet eval forward, CPU, 2 threads, batch 1, median\n")
    rows = []
    for case in CASES:
        if case[1] not in args.models:
            continue
        for batch in args.batch:
            try:
                rows.append(_time_case(case, batch, args))
            except Exception as e:  # keep going: one row failing (e.g. out of memory) should not lose the rest
                print(f"{case[0]} batch {batch}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    if rows:
        _print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
