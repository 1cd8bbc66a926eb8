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

_ON_DISK_ERROR: list = []  # callbacks `(error) -> extra text` run when a disk failure ends the command
_WORKDIR: list[str] = []  # the command's workdir: where a failed write without a file name was going
INTERRUPTED_STATUS = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def note_workdir(workdir: str | os.PathLike) -> None:
    """Remembers the command's workdir, named when a failed write does not say which file it was."""
    _WORKDIR[:] = [os.fspath(workdir)]


def _unnamed() -> str:
    return f"writing into --workdir {_WORKDIR[0]}" if _WORKDIR else "writing a file"


def disk_error_line(e: BaseException) -> str | None:
    """`"FILE: No space left on device (what to do)"` when `e` (or its cause) is a disk-level failure, else None."""
    for err in _chain(e):
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            name = err.filename if err.filename is not None else _unnamed()
            from magnet_jax.preprocess import shown_path

            shown = shown_path(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
            return f"{shown}: {err.strerror or os.strerror(err.errno)} ({DISK_ERRNOS[err.errno]})"
        text = str(err)
        for message, number in _TEXTS.items():
            if message in text:
                found = _QUOTED_PATH.search(text)
                where = found.group(1) if found else _unnamed()
                return f"{where}: {message} ({DISK_ERRNOS[number]})"
    return None


def on_disk_error(callback) -> None:
    """Registers `callback(error) -> str` (say what was kept) for when a disk failure ends the command."""
    _ON_DISK_ERROR.append(callback)


def after_disk_error(e: BaseException) -> str:
    """Runs the registered callbacks; their texts, joined (a failing callback adds nothing)."""
    texts = []
    for callback in _ON_DISK_ERROR:
        try:
            texts.append(callback(e) or "")
        except Exception:  # noqa: BLE001 - the disk error is the one to report
            continue
    return "".join(texts)


def write_partial_summary(e: BaseException, summary: dict, workdir: str, out_dirs: list[str]) -> str:
    """Predict stopped by a full disk: the outputs of the image being written (the first of `out_dirs` the
    summary does not list) are incomplete and removed, and `WORKDIR/predict_summary.json` lists the images
    written before; returns what to add to the one line."""
    import shutil

    from magnet_jax.evaluation import write_json_atomic
    from magnet_jax.preprocess import shown_path

    done = {row.get("output") for row in summary.get("images", [])}
    failed = next((d for d in out_dirs if d not in done), None)
    text = ""
    if failed is not None and os.path.isdir(failed):
        shutil.rmtree(failed, ignore_errors=True)  # room for the summary, and no half-written image folder
        text = f"; the incomplete outputs {shown_path(failed)} were removed"
    summary["stopped"] = disk_error_line(e)
    path = os.path.join(workdir, "predict_summary.json")
    try:
        write_json_atomic(path, summary)
    except OSError:
        return text + "; predict_summary.json could not be written either"
    return text + f"; the {len(done)} images written before are listed in {shown_path(path)}"


def interrupted_line(e: BaseException) -> str:
    """The one line of a Ctrl-C: the training loop's own (which step) or a generic one."""
    text = " ".join(str(e).split())
    return text or "interrupted; rerun the same command to resume (finished work is kept)"


def _orbax_echo(args) -> bool:
    """An unraisable error that only echoes a failed orbax read: its closed event loop, or a sibling read
    of the same damaged checkpoint whose coroutine was dropped."""
    exc = args.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    import traceback

    return any("orbax/checkpoint" in f.filename for f in traceback.extract_tb(exc.__traceback__)) if exc else False


class _NoOrphanTasks:
    def filter(self, record) -> bool:
        return not str(record.msg).split("\n", 1)[0].endswith("exception was never retrieved")


def quiet_closed_loop_noise() -> None:
    """After a failed orbax read, tensorstore's remaining callbacks find orbax's asyncio loop closed and
    print one 'Event loop is closed' traceback each (through `sys.unraisablehook`), and the sibling reads
    that failed too are printed as ignored exceptions or logged by asyncio ('Task exception was never
    retrieved'), each with its traceback. They say
    nothing the one line (or note) about the damaged file does not, so they are dropped; everything else
    prints as before."""
    import logging
    import sys

    before = sys.unraisablehook

    def hook(args):
        if not _orbax_echo(args):
            before(args)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_NoOrphanTasks())
