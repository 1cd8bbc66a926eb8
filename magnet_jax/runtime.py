"""Process-wide runtime settings for the entry points; imports nothing heavy (no JAX).

XLA's CPU backend allocates its large buffers per execution. With glibc's defaults every buffer
above the mmap threshold is a fresh `mmap`, unmapped again when freed, so each forward pass
page-faults and the kernel zeroes the pages again (in the refiner, most of its time). The fix is
to keep freed memory in the process: one malloc arena (`M_ARENA_MAX=1`: large blocks come from
the main heap, not from per-thread 64 MiB heaps), no mmap for large blocks (`M_MMAP_MAX=0`) and
no trimming of the heap top (`M_TRIM_THRESHOLD` = SIZE_MAX; `2**31 - 1`, the largest positive
`int`, is not enough: a freed top above 2 GiB, e.g. patch batch 4 at 508 px, is trimmed and the
faults come back). All three are needed; any two change nothing. Results are bit-identical; the
cost is that the process keeps its peak heap until it exits.

That is the `tuned` mode, for inference (`--mode=evaluate|predict|sweep`, the converter, the inference
benchmarks), whose allocations repeat image after image. Training interleaves steps, validation and
checkpoints of different sizes in one never-trimmed heap, and there the heap outgrows the live memory:
the DeepGlobe refiner step (batch 8, 508 px) peaks at 17.1 GB with glibc's defaults, but its `tuned`
heap grew past 21 GB within three steps (killed there; unbounded, it was killed by the kernel on a
23 GB machine). Training (`--mode=train`, `benchmarks/train.py`, the test suite) therefore uses the
`bounded` mode: the same single arena without mmap, but the heap top is trimmed above 2 GiB
(`M_TRIM_THRESHOLD = 2**31 - 1`), so the resident set stays at the step's live peak (17.0 GB) and the
step is still faster than with glibc's defaults (77.4 vs 84.1 s, same machine and hour).

    from magnet_jax.runtime import configure_allocator
    configure_allocator()             # first thing in a command, before JAX allocates anything
    configure_allocator("bounded")    # training

`MAGNET_JAX_ALLOCATOR=tuned|bounded|system` overrides the command's default (`system`: glibc's
defaults). The settings go to the running process through `mallopt` and to its child processes
through `GLIBC_TUNABLES` (read by glibc at start-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ALLOCATOR_ENV", "MODES", "allocator_mode", "configure_allocator"]

ALLOCATOR_ENV = "MAGNET_JAX_ALLOCATOR"
MODES = ("tuned", "bounded", "system")

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int; glibc converts it to size_t, so -1 is SIZE_MAX ("never trim").
_TRIM = {"tuned": (-1, 2**64 - 1), "bounded": (2**31 - 1, 2**31 - 1)}  # (mallopt value, tunable value)


def _settings(mode: str) -> tuple[tuple[int, int], ...]:
    return ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM[mode][0]))


def _tunables(mode: str) -> tuple[str, ...]:
    return ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={_TRIM[mode][1]}")


_applied: str | None = None


def allocator_mode(default: str = "tuned") -> str:
    """`$MAGNET_JAX_ALLOCATOR` checked: "tuned", "bounded" or "system"; `default` when unset or empty."""
    if default not in MODES:
        raise ValueError(f"allocator default: expected one of {', '.join(MODES)}, got {default!r}")
    mode = os.environ.get(ALLOCATOR_ENV, "").strip().lower() or default
    if mode not in MODES:
        raise ValueError(f"{ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]!r}: expected one of {', '.join(MODES)}")
    return mode


def _export_tunables(mode: str) -> None:
    """Adds the settings to `GLIBC_TUNABLES` for child processes (keeps the user's own entries)."""
    current = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    names = {t.split("=", 1)[0] for t in current}
    extra = [t for t in _tunables(mode) if t.split("=", 1)[0] not in names]
    if extra:
        os.environ["GLIBC_TUNABLES"] = ":".join(current + extra)


def configure_allocator(default: str = "tuned") -> str:
    """Applies the allocator settings (idempotent: the first call decides); returns the mode applied
    ("tuned", "bounded", "system") or "unavailable" (not glibc, e.g. macOS or musl: nothing to do).
    `default`: the command's mode when `$MAGNET_JAX_ALLOCATOR` is unset ("bounded" for training).

    Call it before JAX starts its threads (at the top of `main`); later calls still help the
    current thread's arena but threads that already made their own arenas keep them.
    """
    global _applied
    if _applied is not None:
        return _applied
    mode = allocator_mode(default)
    if mode == "system":
        _applied = "system"
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = "unavailable"
        return _applied
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in _settings(mode)):
        _applied = "unavailable"
        return _applied
    _export_tunables(mode)
    _applied = mode
    return _applied
