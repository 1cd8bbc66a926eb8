"""`--config FILE[:VARIANT]` checked before absl loads it, so that a missing file, a syntax error, an
unknown variant or a `get_config` that is missing or returns something else is one line naming the file
(ml_collections reports these as a traceback, or as one flattened traceback on a single line).
"""

from __future__ import annotations

import difflib
import os
import traceback
import types
from collections.abc import Sequence


def config_flag_value(argv: Sequence[str]) -> str | None:
    """The value of `--config` in `argv` (`--config=V` or `--config V`; the last one wins), or None."""
    value = None
    args = list(argv)
    for i, a in enumerate(args):
        for name in ("--config", "-config"):
            if a == name and i + 1 < len(args):
                value = args[i + 1]
            elif a.startswith(name + "="):
                value = a[len(name) + 1 :]
    return value


def _line_in(e: BaseException, path: str) -> str:
    """` (line N)`: the last line of `path` in the traceback of `e`, or ''."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f" (line {frames[-1].lineno})" if frames else ""


def _message(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def check_config_file(spec: str) -> None:
    """Loads `FILE` of `FILE[:VARIANT]` and calls its `get_config`; ValueError (`--config ...: what is wrong`)
    when the file is missing or unreadable, does not compile or run, has no `get_config`, refuses the
    variant, or returns something other than an ml_collections ConfigDict."""
    from ml_collections import ConfigDict

    path, colon, arg = spec.partition(":")
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        near = difflib.get_close_matches(os.path.basename(path), os.listdir(folder)) if os.path.isdir(folder) else []
        hint = f"; did you mean {os.path.join(os.path.dirname(path), near[0])}?" if near else ""
        raise ValueError(f"--config {path}: no such file{hint}")
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise ValueError(f"--config {path}: syntax error at line {e.lineno}: {e.msg}") from None
    module = types.ModuleType("magnet_jax_config_check")
    module.__file__ = os.path.abspath(path)
    try:
        exec(code, module.__dict__)  # what ml_collections does next, checked here first
    except Exception as e:  # noqa: BLE001 - any error of the user's file is reported the same way
        raise ValueError(f"--config {path}: running it failed{_line_in(e, path)}: "
                         f"{type(e).__name__}: {_message(e)}") from None  # fmt: skip
    get = module.__dict__.get("get_config")
    if not callable(get):
        raise ValueError(f"--config {path}: it defines no get_config(); expected a function returning an "
                         "ml_collections ConfigDict (see configs/*.py)")  # fmt: skip
    try:
        config = get(arg) if colon else get()
    except TypeError as e:
        if colon and "positional argument" in str(e):
            raise ValueError(f"--config {spec}: this config takes no variant (':{arg}')") from None
        raise ValueError(f"--config {spec}: get_config failed{_line_in(e, path)}: TypeError: {_message(e)}") from None
    except ValueError as e:  # the config's own refusal (an unknown variant): its message as it wrote it
        raise ValueError(f"--config {spec}: {_message(e)}") from None
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"--config {spec}: get_config failed{_line_in(e, path)}: "
                         f"{type(e).__name__}: {_message(e)}") from None  # fmt: skip
    if not isinstance(config, ConfigDict):
        raise ValueError(f"--config {spec}: get_config() returned {type(config).__name__}; expected an "
                         "ml_collections ConfigDict (start from magnet_jax.config.default_config())")  # fmt: skip
