"""A disk that fills up, for the disk-full tests: a tiny tmpfs where this process may mount one (root with
CAP_SYS_ADMIN), else a file-size limit (`RLIMIT_FSIZE`) on the child, whose writes past it fail with EFBIG
(SIGXFSZ ignored) as a full disk's fail with ENOSPC."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

KINDS = ("tmpfs", "fsize")
MESSAGES = {"tmpfs": "No space left on device", "fsize": "File too large"}


def _mount(folder: Path, size_kb: int) -> bool:
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return proc.returncode == 0


@contextlib.contextmanager
def small_disk(kind: str, root: Path, size_kb: int) -> Iterator[tuple[Path, object]]:
    """(folder, preexec_fn for the child): a folder where at most about `size_kb` KiB can be written (tmpfs),
    or where no single file may exceed `size_kb` KiB (fsize). Skips the test when tmpfs cannot be mounted."""
    import pytest

    folder = root / f"disk_{kind}"
    folder.mkdir()
    if kind == "fsize":
        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (size_kb * 1024, size_kb * 1024))

        yield folder, limit
        return
    if not _mount(folder, size_kb):
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN); the fsize case covers it")
    try:
        yield folder, None
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run_main_in(args: list[str], repo: Path, preexec_fn=None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python main.py ARGS` as `conftest.run_main`, with `preexec_fn` run in the child before it starts."""
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(repo / "main.py"), *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn)  # fmt: skip
