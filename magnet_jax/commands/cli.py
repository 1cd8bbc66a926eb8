"""What `main.py` does with its flags: checks first, one mode, and one line for a user's mistake.

Errors that are the user's to fix (config, data, checkpoint, workdir, resume, unreadable images) are
printed as one line `main.py: error: ...` with exit status 2 (1 when work was done but some inputs
failed: skipped images, a partial evaluation, a diverged training run). A full disk is one line naming
the file (`commands/errors.py`), Ctrl-C one line and exit status 130. Anything else is a bug and keeps
its traceback. `--verbose` (or `MAGNET_JAX_VERBOSE=1`) shows the traceback of every error.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Callable, Sequence

VERBOSE_ENV = "MAGNET_JAX_VERBOSE"


def user_error_types() -> tuple[type[BaseException], ...]:
    """The project's own error classes: a message a user can act on, no traceback needed."""
    from magnet_jax.commands.sweep import SweepError
    from magnet_jax.commands.workdir import WorkdirError
    from magnet_jax.data import DataError
    from magnet_jax.evaluation import EvaluationInterrupted
    from magnet_jax.evaluation.processes import ProcessGroupError
    from magnet_jax.preprocess import ImageDecodeError
    from magnet_jax.training.checkpointing import ResumeError
    from magnet_jax.training.loop import TrainingDivergedError
    from magnet_jax.weights import CheckpointError, StateDictMismatchError

    return (WorkdirError, SweepError, DataError, ImageDecodeError, ResumeError, CheckpointError, StateDictMismatchError,
            EvaluationInterrupted, TrainingDivergedError, ProcessGroupError, FileNotFoundError,
            PermissionError)  # fmt: skip


def _after_work(e: BaseException) -> bool:
    from magnet_jax.commands.check_data import DataCheckFailed
    from magnet_jax.commands.predict import SkippedImagesError
    from magnet_jax.evaluation import EvaluationInterrupted
    from magnet_jax.training.loop import TrainingDivergedError

    return isinstance(e, (SkippedImagesError, EvaluationInterrupted, TrainingDivergedError, DataCheckFailed))


def _unquoted(text: str) -> str:
    """`text` without one pair of enclosing quotes (a message ending in a quoted value keeps its quote)."""
    text = text.strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def one_line(e: BaseException) -> str:
    """The message of `e` on one line (ml_collections quotes and wraps some of its messages)."""
    text = _unquoted(str(e))
    if isinstance(e, KeyError) and e.args:
        text = _unquoted(str(e.args[0]))
    return " ".join(text.replace("\\n", " ").replace("\\'", "'").split()) or type(e).__name__


def verbose(argv: Sequence[str] = ()) -> bool:
    """`--verbose` on the command line (or in `argv`), or `$MAGNET_JAX_VERBOSE` set."""
    given = [a for a in list(argv) + sys.argv if a in ("--verbose", "--verbose=true", "--verbose=True")]
    return bool(given) or os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false")


def fail(message: str, status: int = 2) -> None:
    import warnings

    print(f"main.py: error: {message}", file=sys.stderr, flush=True)
    # The error is said; what the interpreter's shutdown finds half done (orbax's coroutines cut short by a
    # full disk: "never awaited") would only print after it, so the line would no longer be the last.
    warnings.simplefilter("ignore")
    sys.exit(status)


def guarded(fn: Callable[[], object], *, before_work: bool, argv: Sequence[str] = ()) -> object:
    """Runs `fn`; a user error becomes one line and exit status 2 (1 after partial work). Before any work
    (config checks) every ValueError is a user error; during work only the project's own classes are,
    plus ValueErrors whose message names a config field or a flag."""
    from magnet_jax.commands.errors import INTERRUPTED_STATUS, after_disk_error, disk_error_line, interrupted_line

    try:
        return fn()
    except SystemExit:
        raise
    except KeyboardInterrupt as e:
        if verbose(argv):
            raise
        fail(interrupted_line(e), INTERRUPTED_STATUS)
    except Exception as e:
        if verbose(argv):
            raise
        disk = disk_error_line(e)
        if disk is not None:
            fail(disk + after_disk_error(e))
        from magnet_jax.evaluation.processes import ProcessGroupError

        if isinstance(e, ProcessGroupError) and e.peer_lost:
            # a process of the run is gone: JAX's shutdown would wait on it and abort with its own report
            print(f"main.py: error: {one_line(e)}", file=sys.stderr, flush=True)
            os._exit(2)
        mine = isinstance(e, user_error_types()) or _after_work(e)
        named = isinstance(e, ValueError) and str(e).lstrip("'\"").startswith(("config.", "--"))
        if mine or named or (before_work and isinstance(e, (ValueError, KeyError, AttributeError))):
            fail(one_line(e), 1 if _after_work(e) else 2)
        raise


def flags_parser(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a misspelled `--config.FIELD` or a bad value as one line (exit 2)."""
    from absl import app, flags

    if any(a in ("--help", "-h", "-?", "--helpshort", "--helpfull") for a in argv[1:]):
        app.usage(shorthelp="--helpfull" not in argv, writeto_stdout=True, exitcode=0)  # absl itself exits 1

    def parse():
        from magnet_jax.commands.config_file import check_config_file, config_flag_value

        spec = config_flag_value(argv[1:])
        if spec is not None:  # a missing or broken config file: one line, before absl loads it
            check_config_file(spec)
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            fail(one_line(e))

    return guarded(parse, before_work=True, argv=argv)


def safe_console() -> None:
    """stdout / stderr print any file name: bytes that are not UTF-8 (held as surrogates) are escaped, never
    a UnicodeEncodeError in the middle of a run."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if not verbose():
        from magnet_jax.commands.errors import quiet_closed_loop_noise

        quiet_closed_loop_noise()


def _found(item: str) -> bool:
    return os.path.exists(item) or bool(glob.has_magic(item) and glob.glob(item))


def image_args(values: Sequence[str]) -> list[str]:
    """`--image` values (the flag may repeat) -> items. A value is split at its commas, except where the
    comma is inside a path that exists (or a glob that matches): at each place the longest run of
    comma-joined pieces that names one is kept whole (`a.png,b,c.png` with `b,c.png` a file: two items)."""
    items: list[str] = []
    for value in values:
        parts, i = value.split(","), 0
        while i < len(parts):
            j = next((j for j in range(len(parts), i + 1, -1) if _found(",".join(parts[i:j]).strip())), i + 1)
            item = ",".join(parts[i:j]).strip()
            if item:
                items.append(item)
            i = j
    return items
