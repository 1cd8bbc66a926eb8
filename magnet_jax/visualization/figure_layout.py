"""Layout functions of `figures.py`: a titled, legended, captioned grid of image panels (matplotlib, no pyplot).

A figure is three stacked subfigures (title and class legend / the panels / the caption), so that
neither the legend nor a long caption ever overlaps the panels, whatever their number.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["IGNORE_COLOR", "class_handles", "heat", "new_figure", "pixel_accuracy", "save_figure", "show", "to_size"]

PANEL_IN = 3.4  # inches per panel
MAX_SHOWN = 768  # pixels a side drawn per panel (a panel is ~370 pixels wide at 110 dpi)
IGNORE_COLOR = (255, 255, 255)


def class_handles(class_names: Sequence[str], palette: np.ndarray, ignore: bool = False) -> list:
    pal = np.asarray(palette, np.float64) / 255.0
    if len(class_names) > len(pal):
        raise ValueError(f"{len(class_names)} class names but a palette of {len(pal)} colours")
    handles = [Patch(facecolor=pal[i], edgecolor="0.3", label=str(n)) for i, n in enumerate(class_names)]
    if ignore:
        handles.append(Patch(facecolor=np.array(IGNORE_COLOR) / 255.0, edgecolor="0.3", label="ignored (no label)"))
    return handles


def _legend_grid(handles: list, per_row: int) -> tuple[list, int]:
    """Handles reordered (and padded with blanks) so that matplotlib's column-major legend reads row by row."""
    rows = -(-len(handles) // per_row)
    cols = -(-len(handles) // rows)
    padded = handles + [Patch(alpha=0.0, label=" ")] * (rows * cols - len(handles))
    return [padded[r * cols + c] for c in range(cols) for r in range(rows)], cols


def new_figure(nrows: int, ncols: int, handles: list, title: str, caption: str) -> tuple[Figure, np.ndarray]:
    """A figure of `nrows x ncols` image panels: title and legend above them, the wrapped caption below.

    Three stacked subfigures keep the three parts apart whatever their sizes (the panels' own titles
    and colour bars are placed by the constrained layout inside the middle one).
    """
    width = PANEL_IN * ncols
    legend_rows = 0
    if handles:
        handles, legend_cols = _legend_grid(handles, max(2, int(width / 1.6)))  # ~1.6 inch per legend entry
        legend_rows = -(-len(handles) // legend_cols)
    lines = textwrap.fill(caption, int(width * 14)).splitlines() if caption else []  # ~14 chars of 9 pt per inch
    head_h = (0.38 if title else 0.08) + 0.26 * legend_rows
    foot_h = 0.12 + 0.18 * len(lines)
    body_h = PANEL_IN * nrows
    fig = Figure(figsize=(width, head_h + body_h + foot_h), layout="constrained", dpi=110)
    head, body, foot = fig.subfigures(3, 1, height_ratios=[head_h, body_h, foot_h])
    if title:
        head.text(0.5, 1.0 - 0.08 / head_h, title, ha="center", va="top", fontsize=12, fontweight="bold")
    if handles:
        head.legend(handles=handles, loc="lower center", ncols=legend_cols, fontsize=9, frameon=False,
                    borderaxespad=0.1, columnspacing=1.2, handlelength=1.6)  # fmt: skip
    if lines:
        foot.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=9)
    axes = np.atleast_1d(body.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _shrunk(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """`x` area-resized to at most MAX_SHOWN pixels a side (drawing is then fast), and the imshow extent that
    keeps the axes in the original pixel coordinates (patch boxes are drawn in those)."""
    h, w = x.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    f = max(h, w) / MAX_SHOWN
    if f > 1:
        size = (max(1, round(w / f)), max(1, round(h / f)))
        x = cv2.resize(np.ascontiguousarray(x), size, interpolation=cv2.INTER_AREA)
    return x, extent


def show(ax, rgb: np.ndarray, title: str) -> None:
    shown, extent = _shrunk(np.asarray(rgb))
    ax.imshow(shown, interpolation="antialiased", extent=extent)
    ax.set_title(title, fontsize=10)


def heat(ax, values: np.ndarray, title: str, label: str, vmax: float | None) -> None:
    v = np.asarray(values, np.float32)
    top = float(v.max()) if vmax is None else float(vmax)
    shown, extent = _shrunk(v)
    im = ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=max(top, 1e-6), interpolation="antialiased", extent=extent)
    ax.set_title(title, fontsize=10)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(label, fontsize=8)


def to_size(x: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Class ids or RGB to `hw` (nearest: class ids must stay ids)."""
    if tuple(x.shape[:2]) == tuple(hw):
        return x
    return cv2.resize(np.ascontiguousarray(x), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def pixel_accuracy(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Share of labelled pixels (label < num_classes) where `pred` (resized nearest to the label) is right."""
    pred = to_size(np.asarray(pred), label.shape[:2])
    valid = np.asarray(label) < num_classes
    return float((pred[valid] == label[valid]).mean()) if valid.any() else float("nan")


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Writes `fig` as PNG; raises OSError naming the path if it cannot be written."""
    try:
        fig.savefig(os.fspath(path), format="png")
    except OSError as e:
        raise OSError(f"cannot write figure {path}: {e}") from e
