"""The glibc allocator settings of the entry points and heap release; imports nothing heavy (no JAX).

XLA's CPU backend allocates its large buffers per execution. With glibc's defaults every buffer
above the mmap threshold is a fresh `mmap`, unmapped again when freed, so each forward pass
page-faults and the kernel zeroes the pages again (in the refiner, most of its time). The fix is
to keep freed memory in the process: one malloc arena (`M_ARENA_MAX=1`: large blocks come from
the main heap, not from per-thread 64 MiB heaps), no mmap for large blocks (`M_MMAP_MAX=0`) and
no trimming of the heap top (`M_TRIM_THRESHOLD` = SIZE_MAX; `2**31 - 1`, the largest positive
`int`, is not enough: a freed top above 2 GiB, e.g. patch batch 4 at 508 px, is trimmed and the
faults come back). All three are needed; any two change nothing. Results are bit-identical; the
cost is that the process keeps its peak heap until it exits.

That is the `tuned` mode, the default of every command. In a never-trimmed heap a *change* of
workload can grow the heap past the live memory (freed holes that the next program's buffers do not
fit): the DeepGlobe refiner step (batch 8, 508 px) after other programs in one process passed 21 GB
on a 23 GB machine. Repeating one program usually does not (five refiner steps: 16.16 GB after each). So
the training loop hands the freed heap back (`release_heap`, glibc's `malloc_trim`) where its
workload changes, before and after validation and at the start and end of a run; steps in between
reuse their pages. Fragmentation can still happen inside a run (once, a DeepGlobe refiner benchmark
reached 24 GB and was killed), so `tuned` also starts `start_heap_guard`: a thread that releases
the freed heap whenever the resident set passes 85% of the memory limit (MemTotal or the cgroup's).
The refiner step: 29-37 s tuned vs 81-91 s when every step re-faults its 16 GB
(the `bounded` mode: the heap top trimmed above 2 GiB, still selectable, and the test suite's mode,
whose one process runs many different workloads).

    from magnet_jax.allocator import configure_allocator
    configure_allocator()             # first thing in a command, before JAX allocates anything
    configure_allocator("bounded")    # many different workloads in one process (the tests)

`MAGNET_JAX_ALLOCATOR=tuned|bounded|system` overrides the command's default (`system`: glibc's
defaults). The settings go to the running process through `mallopt` and to its child processes
through `GLIBC_TUNABLES` (read by glibc at start-up).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import time

__all__ = [
    "ALLOCATOR_ENV", "MODES", "allocator_mode", "configure_allocator", "heap_guard_releases", "release_heap",
    "start_heap_guard",
]

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


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # not glibc (macOS, musl): nothing to configure or trim
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def configure_allocator(default: str = "tuned") -> str:
    """Applies the allocator settings (idempotent: the first call decides); returns the mode applied
    ("tuned", "bounded", "system") or "unavailable" (not glibc, e.g. macOS or musl: nothing to do).
    `default`: the command's mode when `$MAGNET_JAX_ALLOCATOR` is unset ("bounded" for the test suite).

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
    if _LIBC is None:
        _applied = "unavailable"
        return _applied
    mallopt = _LIBC.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in _settings(mode)):
        _applied = "unavailable"
        return _applied
    _export_tunables(mode)
    if mode == "tuned":
        start_heap_guard()
    _applied = mode
    return _applied


def release_heap() -> None:
    """Hands the freed heap memory back to the OS (glibc's `malloc_trim(0)`; a no-op elsewhere).

    Where a process's workload changes, so that the next program starts from the live memory instead of
    the last one's fragments. Algorithms do not call it; the callers decide: the training loop between
    its phases, the commands after each tile of tiled inference (the `StreamOptions.after_tile` hook),
    the heap guard near the memory limit."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def resident_bytes() -> int | None:
    """The process's resident set in bytes (Linux `/proc/self/statm`), None where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_limit_bytes() -> int | None:
    """The memory this process may use: the machine's (`MemTotal`) or its cgroup's limit if lower."""
    limits = []
    with contextlib.suppress(OSError, ValueError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


_guard: threading.Thread | None = None
_guard_releases = 0


def heap_guard_releases() -> int:
    """How many times the heap guard has released the heap in this process (benchmarks report it)."""
    return _guard_releases


def start_heap_guard(fraction: float = 0.85, interval_s: float = 0.1, limit_bytes: int | None = None) -> bool:
    """Starts (once per process) a daemon thread that calls `release_heap()` whenever the resident set
    passes `fraction` of the memory limit; False where the resident set or the limit is unknown.

    The `tuned` heap's safety net: a never-trimmed heap can fragment past the live memory (the module
    docstring), even inside one training step, faster than anything between steps could notice; the
    thread polls every `interval_s` (one read of /proc/self/statm) and `malloc_trim` is thread-safe.
    After a release the next one waits for another 5% of the limit of growth, so a live set above the
    threshold is not trimmed over and over."""
    global _guard
    limit = limit_bytes or memory_limit_bytes()
    if _guard is not None or _LIBC is None or limit is None or resident_bytes() is None:
        return _guard is not None

    def watch() -> None:
        global _guard_releases
        base = trigger = fraction * limit
        while True:
            time.sleep(interval_s)
            rss = resident_bytes() or 0
            if rss <= base:
                trigger = base
            elif rss > trigger:
                release_heap()
                _guard_releases += 1
                trigger = max(base, min((resident_bytes() or 0) + 0.05 * limit, 0.95 * limit))

    _guard = threading.Thread(target=watch, name="magnet_jax-heap-guard", daemon=True)
    _guard.start()
    return True
