"""Same-process A/B: Winograd F(4x4, 3x3) (`ops.winograd`) against XLA's convolution.

    python benchmarks/ab_winograd.py                      # every 3x3 stride-1 layer shape of the models
    python benchmarks/ab_winograd.py --what models        # whole forwards: auto vs direct
    python benchmarks/ab_winograd.py --what layers --repeats 9

`layers`: one row per distinct 3x3 stride-1 layer of fpn@508, hrnet18+ocr@256x128 and the refiner
(7 classes @508, 19 @512x256): XLA's convolution vs Winograd, calls interleaved, median of `--repeats`,
the speed ratio, the largest difference relative to max|output|, and whether `winograd_pays` (the
rule `conv_algorithm=auto` applies on CPU) takes it. `models`: each model's forward with
`conv_algorithm` direct vs auto, interleaved. Ratios are what compare on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from magnet_jax.allocator import configure_allocator  # noqa: E402

configure_allocator()  # before JAX allocates (MAGNET_JAX_ALLOCATOR=system: glibc's defaults)

# (model, classes, input shape(s)) as the parity pipelines run them, batch 1
MODELS = {
    "fpn@508": ("fpn", 7, [(1, 508, 508, 3)]),
    "hrnet18+ocr@256x128": ("hrnet18+ocr", 19, [(1, 128, 256, 3)]),
    "refiner7@508": ("refinement", 7, [(1, 508, 508, 7)] * 2),
    "refiner19@512x256": ("refinement", 19, [(1, 256, 512, 19)] * 2),
}


def _interleaved(fns, args, repeats: int) -> list[float]:
    import jax

    compiled = [jax.jit(f).lower(*args).compile() for f in fns]
    jax.block_until_ready([c(*args) for c in compiled])
    times: list[list[float]] = [[] for _ in compiled]
    for _ in range(repeats):
        for t, c in zip(times, compiled, strict=True):
            start = time.perf_counter()
            jax.block_until_ready(c(*args))
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def layer_shapes() -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Distinct (input, kernel) shapes of the models' 3x3 stride-1 convolutions, most FLOPs first."""
    import jax
    import jax.numpy as jnp

    import magnet_jax.models.layers as layers
    from magnet_jax.models import build_model

    seen: dict[tuple, int] = {}
    real = layers.conv2d

    def record(x, w, **kw):  # the models' one convolution entry point, observed while tracing
        plain = tuple(kw.get("stride", (1, 1))) == (1, 1) and tuple(kw.get("dilation", (1, 1))) == (1, 1)
        if w.shape[:2] == (3, 3) and plain and kw.get("groups", 1) == 1:
            key = (tuple(x.shape), tuple(w.shape))
            seen[key] = seen.get(key, 0) + 1
        return real(x, w, **kw)

    layers.conv2d = record
    try:
        for name, classes, shapes in MODELS.values():
            model = build_model(name, classes)
            model.eval()
            jax.eval_shape(lambda *xs, m=model: m(*xs), *[jnp.zeros(s) for s in shapes])
    finally:
        layers.conv2d = real
    return sorted(seen, key=lambda k: -k[0][1] * k[0][2] * k[1][2] * k[1][3])


def run_layers(repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from magnet_jax.ops.winograd import conv3x3_winograd, winograd_pays

    same = ((1, 1), (1, 1))

    def direct(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), same, dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def winograd(x, w):
        return conv3x3_winograd(x, w, same)

    rng = np.random.default_rng(0)
    print("| input | Cin -> Cout | direct ms | GFLOP/s | winograd speed-up | max diff / max | auto takes it |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for xs, ws in layer_shapes():
        x = jnp.asarray(rng.normal(size=xs), jnp.float32)
        w = jnp.asarray(rng.normal(size=ws) / np.sqrt(9 * ws[2]), jnp.float32)
        t_direct, t_wino = _interleaved([direct, winograd], (x, w), repeats)
        ref = np.asarray(direct(x, w))
        diff = float(np.abs(np.asarray(jax.jit(winograd)(x, w)) - ref).max() / np.abs(ref).max())
        gflop = 2 * xs[0] * xs[1] * xs[2] * 9 * ws[2] * ws[3] / 1e9
        print(
            f"| {xs[0]}x{xs[1]}x{xs[2]} | {ws[2]} -> {ws[3]} | {t_direct * 1e3:.1f} | {gflop / t_direct:.0f} | "
            f"{t_direct / t_wino:.2f}x | {diff:.1e} | {'yes' if winograd_pays(xs, ws, same) else 'no'} |",
            flush=True,
        )


def run_models(repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from magnet_jax.models import build_model
    from magnet_jax.ops.conv import forward_algorithm

    print("| model | direct ms | auto ms | speed-up | max diff / max |")
    print("| --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for label, (name, classes, shapes) in MODELS.items():
        model = build_model(name, classes)
        model.eval()
        graphdef, state = nnx.split(model)

        def forward(algorithm, graphdef=graphdef):
            def fn(variables, *inputs):
                with forward_algorithm(algorithm):
                    return nnx.merge(graphdef, variables)(*inputs)

            return fn

        xs = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes]
        t_direct, t_auto = _interleaved([forward("direct"), forward("auto")], (state, *xs), repeats)
        a = np.asarray(jax.jit(forward("direct"))(state, *xs))
        b = np.asarray(jax.jit(forward("auto"))(state, *xs))
        print(
            f"| {label} | {t_direct * 1e3:.0f} | {t_auto * 1e3:.0f} | {t_direct / t_auto:.2f}x | "
            f"{float(np.abs(a - b).max() / np.abs(a).max()):.1e} |",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=["layers", "models", "both"], default="both")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if args.what in ("layers", "both"):
        run_layers(args.repeats)
    if args.what in ("models", "both"):
        run_models(args.repeats)


if __name__ == "__main__":
    main()
