"""Errors raised by the data layer before (and while) reading, with messages a user can act on."""

from __future__ import annotations

from collections.abc import Sequence


class DataError(ValueError):
    """A dataset, file list, image or label that cannot be used as it is."""


class MissingDataError(DataError, FileNotFoundError):
    """A dataset folder, file list or listed file that does not exist."""


# What to download for each dataset, and where to put it: filled from the dataset registry
# (`magnet_jax.data.datasets`, each dataset file's `download_hint`) when the package is imported.
# Kept here, as a plain table, so that errors raised anywhere below the registry can name it.
DOWNLOAD_HINTS: dict[str, str] = {}

NOTHING_DOWNLOADED = "Nothing is downloaded automatically."


def download_hint(name: str) -> str:
    """What to download for dataset `name` (the custom dataset's hint for unknown names)."""
    hint = DOWNLOAD_HINTS.get(name, DOWNLOAD_HINTS.get("custom", ""))
    return (hint + " " if hint else "") + NOTHING_DOWNLOADED


def first_few(items: Sequence[str], n: int = 5) -> str:
    """'a, b, c (and 7 more)' for error messages."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")
