"""The benchmarks' harness: device selection, the measured compute peak, device memory.

`select_device("gpu")` must run before JAX is imported (it sets `JAX_PLATFORMS` and turns XLA's GPU
memory preallocation off, so that `memory_stats()["peak_bytes_in_use"]` is the run's real peak).

`peak_gflops()` times one large matrix product (the best of a few) in the same process as the
measured work, so a floor `FLOPs / peak` and the ratio `run_s / floor` compare like with like on a
shared or throttled machine. Both the wall-clock rate and the rate per process-CPU-second are
returned: on a CPU shared with other jobs the second is the steadier one.
"""

from __future__ import annotations

import os
import time

DEVICES = ("cpu", "gpu")


def select_device(device: str) -> None:
    """Before `import jax`: run on `device` ("cpu" or "gpu"); on GPUs, no memory preallocation."""
    if device not in DEVICES:
        raise SystemExit(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")
    if "jax" in __import__("sys").modules:
        raise RuntimeError("select_device must run before JAX is imported")
    os.environ["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
    if device == "gpu":
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"


def check_device(device: str) -> None:
    """After `select_device`: a one-line exit instead of JAX's traceback when the backend is missing."""
    import jax

    try:
        backend = jax.default_backend()
    except Exception as e:  # JAX raises RuntimeError / AssertionError without the plugin
        raise SystemExit(
            f"--device {device}: JAX found no {device.upper()} backend ({type(e).__name__}: {e}); on GPUs install "
            "the CUDA plugin (pip install 'jax[cuda12]==<the jax version of requirements.txt>')"
        ) from None
    if (device == "gpu") != (backend == "gpu"):
        raise SystemExit(f"--device {device}: JAX runs on {backend}")


def peak_gflops(dtype: str = "float32", size: int | None = None, repeats: int = 3) -> dict[str, float]:
    """`{"wall": GFLOP/s, "cpu": GFLOP per process-CPU-second, "n": size}` of one `[n, n] @ [n, n]` product.

    float32 at the highest precision (no TF32 on GPUs, as the parity mode runs); bfloat16 inputs with
    float32 accumulation for the bf16 mode. `size` defaults to 2048 on CPUs, 8192 on accelerators.
    """
    import jax
    import jax.numpy as jnp

    on_cpu = jax.default_backend() == "cpu"
    n = int(size or (2048 if on_cpu else 8192))
    dt = jnp.dtype(dtype)
    a = jnp.asarray(jax.random.normal(jax.random.key(0), (n, n), jnp.float32), dt)
    b = jnp.asarray(jax.random.normal(jax.random.key(1), (n, n), jnp.float32), dt)
    f = jax.jit(lambda a, b: jnp.dot(a, b, precision="highest", preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(max(1, repeats)):
        c, w = time.process_time(), time.perf_counter()
        f(a, b).block_until_ready()
        best_wall = min(best_wall, time.perf_counter() - w)
        best_cpu = min(best_cpu, time.process_time() - c)
    flop = 2.0 * n**3
    return {"wall": flop / best_wall / 1e9, "cpu": flop / max(best_cpu, 1e-9) / 1e9, "n": n}


def device_peak_mb() -> float | None:
    """Peak device memory in MiB so far (`memory_stats()["peak_bytes_in_use"]`), None where not reported (CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)
