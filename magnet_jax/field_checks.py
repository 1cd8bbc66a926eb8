"""The checks of config fields whose values several layers receive, each message written here once.

`config.validate_config` calls them on the ConfigDict; the typed specs and plans below the commands
(`inference.plan.make_plan`, `inference.tiled.StreamOptions`, `data.sample_spec`, `ops.conv`) call the
same function on the value they were given, so a field's error reads the same wherever it is caught.
Every message is one line naming the field (`config.SECTION.NAME`) and what was expected. No imports:
any layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

COMPAT_MODES = ("paper", "reference")  # config.magnet.compat
DTYPES = ("float32", "bfloat16")  # config.magnet.dtype: model compute (float32 is the parity mode)
CONV_ALGORITHMS = ("auto", "direct", "winograd")  # config.magnet.conv_algorithm: 3x3 convolutions' forward
STREAM_MODES = ("auto", "on", "off")  # config.magnet.streamed
STORE_DTYPES = ("float32", "float16")  # config.magnet.stream_dtype

Size = tuple[int, int]  # (W, H)


def _alternatives(choices: Sequence[str]) -> str:
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def check_choice(value, choices: Sequence[str], field: str) -> str:
    """`value` if it is one of `choices`, else ValueError `config.FIELD: expected 'a', 'b' or 'c', got ...`."""
    if value not in choices:
        raise ValueError(f"config.{field}: expected {_alternatives(choices)}, got {value!r}")
    return value


def check_at_least(value, low: int, field: str, note: str = "") -> int:
    """`value` if it is an integer >= `low`, else `config.FIELD: expected >= LOW{note}, got VALUE`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"config.{field}: expected >= {low}{note}, got {value}")
    return value


def check_num_workers(value) -> int:
    """`config.data.num_workers`: reading processes, 0 reads in this process."""
    return check_at_least(value, 0, "data.num_workers", " (0: read in this process)")


def check_integer_at_least(value, low: int, field: str) -> int:
    """`value` if it is an integer >= `low` (NumPy integers too, never a bool or a float)."""
    is_int = isinstance(value, int) or type(value).__module__ == "numpy" and "int" in type(value).__name__
    if isinstance(value, bool) or not is_int or value < low:
        raise ValueError(f"config.{field}: expected an integer >= {low}, got {value!r}")
    return int(value)


def check_size(value: Sequence[int], field: str, text=None) -> Size:
    """(W, H) of positive integers; `text` is what the user wrote (shown instead of the tuple)."""
    try:
        w, h = (int(v) for v in value)
        ok = w > 0 and h > 0 and all(int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = text if text is not None else value
        raise ValueError(f"config.{field}: expected 'W-H' with positive integers, got {shown!r}")
    return w, h


def sizes_text(sizes: Sequence[Size]) -> str:
    """[(W, H), ...] -> 'W-H,W-H' (the config's notation)."""
    return ",".join(f"{w}-{h}" for w, h in sizes)


def check_scales(scales: Sequence[Size], crop_wh: Size | None = None, *, increasing: bool = True) -> None:
    """`config.magnet.scales`: at least one, increasing in width and height (`increasing`), each holding a
    `config.magnet.crop_size` crop when `crop_wh` is given."""
    if not scales:
        raise ValueError("config.magnet.scales: at least one scale is needed")
    for w, h in scales:
        check_size((w, h), "magnet.scales")
    if increasing:
        for (w0, h0), (w1, h1) in zip(scales, scales[1:], strict=False):
            if w1 <= w0 or h1 <= h0:
                raise ValueError(
                    f"config.magnet.scales: scales must increase in width and height, got {sizes_text(scales)!r}"
                )
    if crop_wh is not None:
        cw, ch = check_size(crop_wh, "magnet.crop_size")
        for w, h in scales:
            if w < cw or h < ch:
                raise ValueError(
                    f"config.magnet.crop_size {cw}-{ch} is larger than scale {w}-{h} of config.magnet.scales"
                )


def check_ignore_label(value) -> int | None:
    """`config.data.ignore_label`: None or 0..255 (labels are uint8 maps)."""
    if value is not None and not 0 <= int(value) <= 255:
        raise ValueError(f"config.data.ignore_label: expected 0..255 (labels are uint8 maps), got {value}")
    return value


def check_streamed_compat(streamed: str, compat: str) -> None:
    """Streaming (`config.magnet.streamed=on`) runs `compat='paper'` only."""
    if streamed == "on" and compat != "paper":
        raise ValueError(
            "config.magnet.streamed=on runs compat='paper' only (the reference mode's PyTorch tie-breaking needs "
            "the whole score map); set config.magnet.streamed=off or config.magnet.compat=paper"
        )
