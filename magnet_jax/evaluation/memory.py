"""Peak memory of an evaluation: the device's peak where the backend reports it, else the process's RSS.

On Linux the process's peak RSS (`VmHWM`) is reset at the start (`/proc/self/clear_refs`), so each
evaluation (each sweep point) reports its own peak; where that fails the peak is the process's since
its start, and `source` says so.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import jax


def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class PeakMemory:
    """`read() -> {"peak_memory_mb": float, "peak_memory_source": str}` since construction (see module doc)."""

    def __init__(self):
        self._reset = False
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._reset = True
        except OSError:
            pass
        self._rss_samples = 0.0

    def sample(self) -> None:
        """Records the current high-water mark (cheap; call after each image)."""
        value = _vm_hwm_mb()
        if value is not None:
            self._rss_samples = max(self._rss_samples, value)

    def read(self) -> dict:
        stats = None
        try:
            stats = jax.local_devices()[0].memory_stats()
        except Exception:  # noqa: BLE001 - backends without memory stats raise various errors
            stats = None
        if stats and stats.get("peak_bytes_in_use"):
            return {"peak_memory_mb": round(stats["peak_bytes_in_use"] / 2**20, 1), "peak_memory_source": "device"}
        self.sample()
        if self._rss_samples:
            where = "process peak RSS during the evaluation" if self._reset else "process peak RSS since start"
            return {"peak_memory_mb": round(self._rss_samples, 1), "peak_memory_source": where}
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        return {"peak_memory_mb": round(peak, 1), "peak_memory_source": "process peak RSS since start"}
