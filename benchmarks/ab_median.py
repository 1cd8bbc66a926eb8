"""Same-process A/B: the median filter's bisection with its k-row loop as a `fori_loop` (the previous
code, kept here) vs the unrolled one in `magnet_jax.ops.median`. Checks bit-equality, then prints
interleaved medians (wall and process CPU) and the ratios.

    python benchmarks/ab_median.py --repeats 7
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


def _previous_bisect(x, kernel: int):
    """The bisection as it was: the k rows of each count in a `fori_loop`, k shifted compares each."""
    import jax
    import jax.numpy as jnp

    h, w = x.shape
    padded = jnp.pad(x, (((kernel - 1) // 2, kernel // 2), ((kernel - 1) // 2, kernel // 2)))
    values = jnp.sort(jnp.concatenate([x.reshape(-1), jnp.zeros((1,), x.dtype)]))
    n, need = values.shape[0], (kernel * kernel - 1) // 2 + 1

    def count_le(t):
        def row(dy, acc):
            band = jax.lax.dynamic_slice_in_dim(padded, dy, h, axis=0)
            for dx in range(kernel):
                acc = acc + (band[:, dx : dx + w] <= t).astype(jnp.int32)
            return acc

        return jax.lax.fori_loop(0, kernel, row, jnp.zeros((h, w), jnp.int32))

    def step(_, lo_hi):
        lo, hi = lo_hi
        mid = (lo + hi) // 2
        enough = count_le(values[mid]) >= need
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(
        0, max(1, (n - 1).bit_length()), step, (jnp.zeros((h, w), jnp.int32), jnp.full((h, w), n - 1, jnp.int32))
    )
    return values[lo]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from magnet_jax.ops.median import median_filter

    rng = np.random.default_rng(0)
    for size, k in ((508, 11), (256, 5)):  # deepglobe's and cityscapes' smoothing at the input size
        x = jnp.asarray((rng.random((size, size)) * (rng.random((size, size)) > 0.3)).astype(np.float32))
        old = jax.jit(lambda x, k=k: _previous_bisect(x, k))
        new = jax.jit(lambda x, k=k: median_filter(x, k))
        np.testing.assert_array_equal(np.asarray(old(x)), np.asarray(new(x)))
        times = {"previous": [], "unrolled": []}
        for _ in range(args.repeats):
            for name, fn in (("previous", old), ("unrolled", new)):
                c, w = time.process_time(), time.perf_counter()
                fn(x).block_until_ready()
                times[name].append((time.perf_counter() - w, time.process_time() - c))
        (wa, ca), (wb, cb) = (
            (statistics.median(t[0] for t in times[n]), statistics.median(t[1] for t in times[n])) for n in times
        )
        print(
            f"median {size}x{size} k={k}: previous {wa * 1e3:.0f} ms (cpu {ca * 1e3:.0f}), unrolled {wb * 1e3:.0f} ms "
            f"(cpu {cb * 1e3:.0f}); wall {wa / wb:.2f}x, cpu {ca / cb:.2f}x; bit-exact",
            flush=True,
        )


if __name__ == "__main__":
    main()
