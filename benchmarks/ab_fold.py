"""Same-process A/B: eval-mode BatchNorm folded into the convolutions (`models.layers.conv_bn`) vs the
literal conv -> BN -> ReLU layers. Interleaved calls, median of `--repeats`; wall and process CPU
seconds (the CPU figure is the steadier one on a shared machine), and the largest output difference.

    python benchmarks/ab_fold.py --models refinement fpn hrnet18+ocr --repeats 5
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

INPUTS = {"refinement": (7, 508, 508), "fpn": (7, 508, 508), "hrnet18+ocr": (19, 128, 256), "psp": (7, 508, 508)}


def _timed(fn, *args) -> tuple[float, float]:
    c, w = time.process_time(), time.perf_counter()
    fn(*args).block_until_ready()
    return time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["refinement", "fpn", "hrnet18+ocr"], choices=sorted(INPUTS))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from magnet_jax.models import build_model
    from magnet_jax.models.layers import batchnorm_folding

    rng = np.random.default_rng(0)
    for name in args.models:
        n, h, w = INPUTS[name]
        graph, state = nnx.split(build_model(name, n))
        if name == "refinement":
            p1 = rng.random((1, h, w, n), np.float32)
            x = (jnp.asarray(p1 / p1.sum(-1, keepdims=True)), jnp.asarray(p1[:, ::-1] / p1.sum(-1, keepdims=True)))
        else:
            x = (jnp.asarray(rng.standard_normal((1, h, w, 3), np.float32)),)
        fns = {}
        for folded in (False, True):
            with batchnorm_folding(folded):
                fns[folded] = jax.jit(lambda s, *a, g=graph: nnx.merge(g, s)(*a)).lower(state, *x).compile()
        outs = {k: np.asarray(f(state, *x)) for k, f in fns.items()}
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for k in (False, True):
                times[k].append(_timed(fns[k], state, *x))
        med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}
        diff = float(np.abs(outs[True] - outs[False]).max())
        scale = float(np.abs(outs[False]).max())
        print(
            f"{name} {h}x{w}: unfolded {med[False][0] * 1e3:.0f} ms (cpu {med[False][1] * 1e3:.0f}), folded "
            f"{med[True][0] * 1e3:.0f} ms (cpu {med[True][1] * 1e3:.0f}); speed-up wall "
            f"{med[False][0] / med[True][0]:.2f}x, cpu {med[False][1] / med[True][1]:.2f}x; "
            f"max |diff| {diff:.2e} (max |out| {scale:.2e})",
            flush=True,
        )


if __name__ == "__main__":
    main()
