"""Errors raised by the data layer before (and while) reading, with messages a user can act on."""

from __future__ import annotations

from collections.abc import Sequence


class DataError(ValueError):
    """A dataset, file list, image or label that cannot be used as it is."""


class MissingDataError(DataError, FileNotFoundError):
    """A dataset folder, file list or listed file that does not exist."""


# Closes every "what to download" hint (the registry's `download_hint`, added where a source is built).
NOTHING_DOWNLOADED = "Nothing is downloaded automatically."


def first_few(items: Sequence[str], n: int = 5) -> str:
    """'a, b, c (and 7 more)' for error messages."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")
