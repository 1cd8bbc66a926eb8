"""A disk that fills up, for the disk-full tests: a tiny tmpfs where this process may mount one (root with
CAP_SYS_ADMIN), else a file-size limit (`RLIMIT_FSIZE`) on the child, whose writes past it fail with EFBIG
(SIGXFSZ ignored) as a full disk's fail with ENOSPC."""

from __future__ import annotations

import contextlib
import os
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


def run_limited(fsize_kb: str, main: str, *args: str) -> None:
    """The child of `run_main_in`: `main ARGS` with writes limited to `fsize_kb` KiB a file. It sets its own limit
    (no preexec_fn: forking a process that runs JAX's threads may deadlock)."""
    import resource
    import runpy
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(fsize_kb) * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.argv = [main, *args]
    runpy.run_path(main, run_name="__main__")


@contextlib.contextmanager
def small_disk(kind: str, root: Path, size_kb: int) -> Iterator[tuple[Path, int | None]]:
    """(folder, file-size limit for `run_main_in`): a folder where at most about `size_kb` KiB can be
    written (tmpfs), or a limit of `size_kb` KiB on every file the child writes (fsize). Skips the test
    when tmpfs cannot be mounted."""
    import pytest

    folder = root / f"disk_{kind}"
    folder.mkdir()
    if kind == "fsize":
        yield folder, size_kb
        return
    if not _mount(folder, size_kb):
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN); the fsize case covers it")
    try:
        yield folder, None
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def run_main_in(args: list[str], repo: Path, fsize_kb: int | None = None, timeout: int = 900):
    """`python main.py ARGS` as `helpers.cli.run_main`, under a file-size limit of `fsize_kb` KiB when given."""
    from helpers.multidevice import child_command, child_env

    main = str(repo / "main.py")
    argv = child_command("helpers.small_disk:run_limited", fsize_kb, main) if fsize_kb else [sys.executable, main]
    return subprocess.run([*argv, *args], cwd=repo, env=child_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
