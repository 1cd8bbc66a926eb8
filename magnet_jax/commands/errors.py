"""Failures of the machine rather than of magnet-jax, as one line naming the file: a full disk (or a
file-size limit, a quota, a read-only or failing filesystem) wherever it happens, and Ctrl-C.

Native libraries (orbax / tensorstore, tensorboardX) wrap the OSError or only keep its text, so the
cause chain and the messages are searched for it.
"""

from __future__ import annotations

import errno
import os
import re

# errno -> what the user can do about it
DISK_ERRNOS = {
    errno.ENOSPC: "free some space, or use a --workdir on a disk with more",
    errno.EDQUOT: "free some space, or use a --workdir on a disk with more",
    errno.EFBIG: "a file-size limit (ulimit -f) or the filesystem's limit was reached",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "the disk reported an input/output error",
}
_TEXTS = {os.strerror(n): n for n in DISK_ERRNOS}
_QUOTED_PATH = re.compile(r"""(?:'|")(/[^'"]+)(?:'|")""")

INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def disk_error_line(e: BaseException) -> str | None:
    """`"FILE: No space left on device (what to do)"` when `e` (or its cause) is a disk-level failure, else None."""
    for err in _chain(e):
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            name = err.filename if err.filename is not None else "writing a file"
            from magnet_jax.preprocess import shown_path

            shown = shown_path(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
            return f"{shown}: {err.strerror or os.strerror(err.errno)} ({DISK_ERRNOS[err.errno]})"
        text = str(err)
        for message, number in _TEXTS.items():
            if message in text:
                found = _QUOTED_PATH.search(text)
                where = found.group(1) if found else "writing a file"
                return f"{where}: {message} ({DISK_ERRNOS[number]})"
    return None


def interrupted_line(e: BaseException) -> str:
    """The one line of a Ctrl-C: the training loop's own (which step) or a generic one."""
    text = " ".join(str(e).split())
    return text or "interrupted; rerun the same command to resume (finished work is kept)"
