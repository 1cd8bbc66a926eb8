"""Progress of long tiled runs on stderr: tiles done / total per stage (tqdm).

`config.predict.progress`: `auto` shows it when stderr is a terminal, `on` always (e.g. into a log file),
`off` never. The bar is cleared when its loop ends or fails, so an error's one line stays the last line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

__all__ = ["PROGRESS_MODES", "progress_enabled", "tile_progress"]

PROGRESS_MODES = ("auto", "on", "off")


def progress_enabled(mode: str) -> bool:
    """Whether to show progress for `config.predict.progress` = `mode` (see the module docstring)."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"config.predict.progress: expected one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and sys.stderr.isatty())


def tile_progress(items: Sequence[T], desc: str, enabled: bool) -> Iterator[T]:
    """Yields `items`, counting them on stderr as `desc: n/total tiles` when `enabled`."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="tile", file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
