"""Host-side storage for streamed inference: stage maps by region, and the image at a scale by region.

`HostMap` holds a `[H, W, C]` (or `[H, W]`) array in RAM when it is small, else in a file that every
`read` / `write` maps (`np.memmap`) only for that call: the pages leave the process's resident set when
the call returns (dirty ones are written back by the kernel), so the resident memory stays at one
region whatever the map's size.

`scratch_dir(parent)` is a run's folder for map files, `parent/.magnet_tmp_<pid>`, removed when the run ends;
a run killed before that leaves it behind, and the next run in `parent` removes it (its pid is dead).

`ScaledImage` (the image at a scale, read by region) lives in `rasters/scaled.py`, re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np

from magnet_jax.rasters.scaled import ScaledImage, region_resize_exact

__all__ = ["HostMap", "ScaledImage", "region_resize_exact", "scratch_dir"]

RAM_BYTES = 64 << 20  # maps up to this size stay in RAM
SCRATCH_PREFIX = ".magnet_tmp_"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_scratch(parent: str) -> list[str]:
    """Removes the `parent/.magnet_tmp_<pid>` folders of processes no longer running; returns them."""
    removed = []
    for name in os.listdir(parent) if os.path.isdir(parent) else ():
        pid = name[len(SCRATCH_PREFIX) :]
        if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(os.path.join(parent, name))
    return removed


@contextlib.contextmanager
def scratch_dir(parent: str) -> Iterator[str]:
    """`parent/.magnet_tmp_<pid>` for this run's map files (stale ones removed first), removed on exit."""
    os.makedirs(parent, exist_ok=True)
    remove_stale_scratch(parent)
    path = os.path.join(parent, f"{SCRATCH_PREFIX}{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class HostMap:
    """A host array read and written by rectangular region (see the module docstring).

    Args:
        shape: `(H, W)` or `(H, W, C)`.
        dtype: storage dtype (e.g. float32, float16, uint8); reads return it unchanged.
        folder: where the file goes (default: the system temporary folder); removed by `close()`.
        ram_bytes: maps up to this size live in RAM instead.
    """

    def __init__(self, shape: tuple[int, ...], dtype, *, folder: str | None = None, ram_bytes: int = RAM_BYTES):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._array = None
        self.path = None
        if self.nbytes <= ram_bytes:
            self._array = np.zeros(self.shape, self.dtype)
            return
        fd, self.path = tempfile.mkstemp(prefix="magnet_map_", suffix=".raw", dir=folder)
        os.ftruncate(fd, self.nbytes)  # sparse: no disk used until written
        os.close(fd)

    def _view(self, mode: str) -> np.ndarray:
        if self._array is not None:
            return self._array
        if self.path is None:
            raise ValueError("HostMap: used after close()")
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=self.shape)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """A copy of `[y0:y1, x0:x1]`."""
        view = self._view("r")
        out = np.array(view[y0:y1, x0:x1])
        del view
        return out

    def write(self, y0: int, x0: int, block: np.ndarray) -> None:
        """`map[y0:y0 + h, x0:x0 + w] = block` (cast to the storage dtype)."""
        view = self._view("r+")
        view[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block
        if isinstance(view, np.memmap):
            view.flush()
        del view

    def close(self) -> None:
        self._array = None
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self.path = None

    def __del__(self):  # the file is scratch data
        try:  # noqa: SIM105 (contextlib may be gone at interpreter exit)
            self.close()
        except Exception:
            pass
