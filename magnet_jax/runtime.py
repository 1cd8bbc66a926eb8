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

    from magnet_jax.runtime import configure_allocator
    configure_allocator()   # first thing in a command, before JAX allocates anything

`MAGNET_JAX_ALLOCATOR=system` skips it (glibc's defaults). The settings go to the running process
through `mallopt` and to its child processes through `GLIBC_TUNABLES` (read by glibc at start-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["ALLOCATOR_ENV", "allocator_mode", "configure_allocator"]

ALLOCATOR_ENV = "MAGNET_JAX_ALLOCATOR"
_MODES = ("tuned", "system")

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt takes an int; glibc converts it to size_t, so -1 is SIZE_MAX ("never trim").
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
_TUNABLES = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0", f"glibc.malloc.trim_threshold={2**64 - 1}")

_applied: str | None = None


def allocator_mode() -> str:
    """`$MAGNET_JAX_ALLOCATOR` checked: "tuned" (default, also when empty) or "system"."""
    mode = os.environ.get(ALLOCATOR_ENV, "").strip().lower() or "tuned"
    if mode not in _MODES:
        raise ValueError(f"{ALLOCATOR_ENV}={os.environ[ALLOCATOR_ENV]!r}: expected one of {', '.join(_MODES)}")
    return mode


def _export_tunables() -> None:
    """Adds the settings to `GLIBC_TUNABLES` for child processes (keeps the user's own entries)."""
    current = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    names = {t.split("=", 1)[0] for t in current}
    extra = [t for t in _TUNABLES if t.split("=", 1)[0] not in names]
    if extra:
        os.environ["GLIBC_TUNABLES"] = ":".join(current + extra)


def configure_allocator() -> str:
    """Applies the allocator settings (idempotent); returns "tuned", "system" (opt-out) or
    "unavailable" (not glibc, e.g. macOS or musl: nothing to do).

    Call it before JAX starts its threads (at the top of `main`); later calls still help the
    current thread's arena but threads that already made their own arenas keep them.
    """
    global _applied
    if _applied is not None:
        return _applied
    mode = allocator_mode()
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
    if not all(mallopt(param, value) == 1 for param, value in _SETTINGS):
        _applied = "unavailable"
        return _applied
    _export_tunables()
    _applied = "tuned"
    return _applied
