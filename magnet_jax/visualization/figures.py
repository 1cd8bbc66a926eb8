"""Captioned figures of a MagNet run (matplotlib): each stage, the final result, evaluation panels.

The figure functions take plain arrays (RGB uint8 images `[H, W, 3]`, class-id maps `[h, w]`), the
class names and a palette (`[C, 3]` uint8, e.g. `data.dataset_spec(config).palette`), and return a
`matplotlib.figure.Figure` built without pyplot (no global state: the same code runs in scripts,
threads and notebooks, where a returned figure displays itself). `save_stage_figures` turns a
`MagNetResult` and its plan into PNG files (used by `--mode=predict`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from magnet_jax.preprocess import coarse_crop, resize_image
from magnet_jax.visualization.figure_layout import (
    IGNORE_COLOR,
    class_handles,
    heat,
    new_figure,
    pixel_accuracy,
    save_figure,
    show,
    to_size,
)
from magnet_jax.visualization.pictures import colorize, overlay

__all__ = [
    "evaluation_figure",
    "final_figure",
    "pixel_accuracy",
    "progression_figure",
    "save_figure",
    "save_stage_figures",
    "stage_caption",
    "stage_figure",
    "stage_figures",
]

SELECTED_COLOR = "#00e5ff"  # outline of a refined patch
REFINED_COLOR = np.array([255, 0, 200], np.uint8)  # a point written with refined values


def stage_caption(index: int, scale_wh: tuple[int, int], n_total: int = 0, k: int = 0, points: int = 0) -> str:
    """One sentence on what MagNet did at stage `index` (0: the coarse pass)."""
    w, h = scale_wh
    if index == 0:
        return (f"Stage 0: the backbone segments the whole image resized to {w}x{h}; the rest of MagNet only "
                "refines this coarse prediction.")  # fmt: skip
    return (
        f"Stage {index} ({w}x{h}): the previous prediction is upsampled to {w}x{h}; its uncertainty (1 minus the "
        f"margin between the two most likely classes) ranks the {n_total} patches, {k} are refined (backbone on "
        f"the patch + refiner fed with the coarse prediction), and the {points} pixels with the highest smoothed "
        "error score take the refined values."
    )


def stage_figure(
    image: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    error: np.ndarray | None = None,
    boxes: np.ndarray | Sequence | None = None,
    selected: np.ndarray | None = None,
    refined: np.ndarray | None = None,
    title: str = "",
    caption: str = "",
) -> Figure:
    """One stage: input at the stage's scale, prediction, and for a refinement stage the uncertainty,
    the patches chosen, the error score and the points refined.

    Args:
        image: `[h, w, 3]` uint8, the image at this stage's resolution (stage 0: the backbone's input).
        pred: `[h, w]` class ids after the stage.
        uncertainty, error: `[h, w]` float maps (stages >= 1).
        boxes: `[N, 4]` patch boxes (x0, y0, x1, y1) in pixels of this scale; selected: `[k]` indices refined.
        refined: `[h, w]` bool, the pixels written with refined values.
    """
    h, w = pred.shape[:2]
    image = to_size(np.asarray(image), (h, w))
    handles = class_handles(class_names, palette)
    if uncertainty is None:  # stage 0: input and prediction only
        fig, axes = new_figure(1, 2, handles, title, caption)
        show(axes[0], image, f"input at {w}x{h}")
        show(axes[1], colorize(pred, palette, IGNORE_COLOR), f"prediction ({w}x{h})")
        return fig
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
    chosen = [] if selected is None else [int(i) for i in np.asarray(selected).ravel()]
    if len(boxes):
        handles.append(Line2D([], [], color=SELECTED_COLOR, lw=2, label="patch refined (rank)"))
        if len(chosen) < len(boxes):
            handles.append(Line2D([], [], color="0.6", lw=1, ls="--", label="patch not refined"))
    if refined is not None:
        handles.append(Patch(facecolor=REFINED_COLOR / 255.0, edgecolor="0.3", label="refined point"))
    fig, axes = new_figure(2, 3, handles, title, caption)
    show(axes[0], image, f"input at {w}x{h}")
    heat(axes[1], uncertainty, "uncertainty of the upsampled input", "1 - (p1 - p2)", 1.0)
    show(axes[2], image, f"patches chosen: {len(chosen)} of {len(boxes)}")
    _draw_patches(axes[2], boxes, chosen)
    if error is not None:
        heat(axes[3], error, "error score (smoothed)", "certainty(refined) x uncertainty", None)
    else:
        axes[3].set_axis_off()
    if refined is not None:
        mask = np.asarray(refined, bool)
        n = int(mask.sum())
        text = f"points refined: {n} ({100.0 * n / max(mask.size, 1):.1f}% of pixels)"
        show(axes[4], _points_picture(image, mask), text)
    else:
        axes[4].set_axis_off()
    show(axes[5], colorize(pred, palette, IGNORE_COLOR), f"prediction after this stage ({w}x{h})")
    return fig


def _points_picture(image: np.ndarray, mask: np.ndarray, max_side: int = 400) -> np.ndarray:
    """The image dimmed to grey with the refined points in colour, max-pooled to at most `max_side` pixels
    so that isolated points stay visible once the figure is drawn (a plain resize would average them away)."""
    h, w = mask.shape
    f = max(1, -(-max(h, w) // max_side))
    ph, pw = -(-h // f), -(-w // f)
    pooled = np.zeros((ph * f, pw * f), bool)
    pooled[:h, :w] = mask
    pooled = pooled.reshape(ph, f, pw, f).any(axis=(1, 3))
    gray = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (pw, ph), interpolation=cv2.INTER_AREA)
    shown = np.repeat(0.35 * gray[..., None].astype(np.float32) + 40, 3, axis=-1).astype(np.uint8)
    shown[pooled] = REFINED_COLOR
    return shown


def _draw_patches(ax, boxes: np.ndarray, chosen: list[int]) -> None:
    """Outlines the patch grid: refined patches solid (numbered by rank when few), the others dashed."""
    thin = 0.6 if len(boxes) > 64 else 1.0
    taken = set(chosen)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if i not in taken:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=thin,
                                   ls="--", alpha=0.7))  # fmt: skip
    for rank, i in enumerate(chosen):
        x0, y0, x1, y1 = boxes[i]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=SELECTED_COLOR, lw=1.6 * thin))
        if len(chosen) <= 24:
            ax.text(x0 + 0.02 * (x1 - x0), y0 + 0.02 * (y1 - y0), str(rank + 1), color=SELECTED_COLOR, fontsize=7,
                    va="top", ha="left")  # fmt: skip


def progression_figure(
    preds: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    palette: np.ndarray,
    *,
    image: np.ndarray | None = None,
    label: np.ndarray | None = None,
    title: str = "",
    caption: str = "",
) -> Figure:
    """Panels left to right: [image], each named prediction (e.g. one per stage), [ground truth].

    Predictions (class ids) are shown at the largest one's size (nearest); with `label`, each panel
    title gives the pixel accuracy against it.
    """
    items = list(preds.items())
    if not items:
        raise ValueError("progression_figure: no prediction given")
    hw = max((p.shape[:2] for _, p in items), key=lambda s: s[0] * s[1])
    num = len(class_names)
    label = None if label is None else np.asarray(label)
    handles = class_handles(class_names, palette, label is not None and bool((label >= num).any()))
    fig, axes = new_figure(1, len(items) + (image is not None) + (label is not None), handles, title, caption)
    ax_iter = iter(axes)
    if image is not None:
        show(next(ax_iter), np.asarray(image), "image")
    for name, p in items:
        text = name if label is None else f"{name}\npixel accuracy {100 * pixel_accuracy(p, label, num):.1f}%"
        show(next(ax_iter), colorize(to_size(np.asarray(p), hw), palette, IGNORE_COLOR), text)
    if label is not None:
        show(next(ax_iter), colorize(label, palette, IGNORE_COLOR), "ground truth")
    return fig


def final_figure(
    image: np.ndarray,
    pred: np.ndarray,
    class_names: Sequence[str],
    palette: np.ndarray,
    *,
    label: np.ndarray | None = None,
    title: str = "MagNet: final result",
    caption: str = "",
) -> Figure:
    """The image, MagNet's prediction blended over it (the original demo's picture), the prediction,
    and the ground truth when given (with the pixel accuracy)."""
    image = np.asarray(image)
    num = len(class_names)
    label = None if label is None else np.asarray(label)
    handles = class_handles(class_names, palette, label is not None and bool((label >= num).any()))
    fig, axes = new_figure(1, 3 + (label is not None), handles, title, caption)
    show(axes[0], image, f"image ({image.shape[1]}x{image.shape[0]})")
    show(axes[1], overlay(image, pred, palette), "prediction over the image")
    text = f"prediction ({pred.shape[1]}x{pred.shape[0]})"
    if label is not None:
        text += f"\npixel accuracy {100 * pixel_accuracy(pred, label, num):.1f}%"
        show(axes[3], colorize(label, palette, IGNORE_COLOR), "ground truth")
    show(axes[2], colorize(pred, palette, IGNORE_COLOR), text)
    return fig


def evaluation_figure(
    image: np.ndarray,
    label: np.ndarray,
    preds: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    palette: np.ndarray,
    path: str | os.PathLike | None = None,
    title: str = "",
) -> Figure:
    """image | ground truth | each prediction of `preds` (e.g. coarse, patch, MagNet), at the label's size,
    each captioned with its pixel accuracy; written to `path` (PNG) when given.

    `label`: `[H, W]` class ids (values >= len(class_names) are ignored pixels, drawn white);
    `preds`: name -> `[h, w]` class ids (resized nearest to the label when their size differs).
    """
    label = np.asarray(label)
    num = len(class_names)
    handles = class_handles(class_names, palette, bool((label >= num).any()))
    fig, axes = new_figure(1, 2 + len(preds), handles, title, "")
    show(axes[0], np.asarray(image), "image")
    show(axes[1], colorize(label, palette, IGNORE_COLOR), "ground truth")
    for ax, (name, p) in zip(axes[2:], preds.items(), strict=True):
        acc = pixel_accuracy(p, label, num)
        show(ax, colorize(to_size(np.asarray(p), label.shape[:2]), palette, IGNORE_COLOR),
              f"{name}\npixel accuracy {100 * acc:.1f}%")  # fmt: skip
    if path is not None:
        save_figure(fig, path)
    return fig


def stage_figures(result, plan, image: np.ndarray, class_names: Sequence[str], palette: np.ndarray) -> list[Figure]:
    """One `stage_figure` per stage of `result` (a `MagNetResult` of `plan`, a `MagNetPlan`), captioned
    from the plan; `image` is the RGB uint8 input `[H, W, 3]`."""
    figs = []
    stage_plans = {st.index: st for st in plan.stages}
    cw, ch = plan.crop_wh
    for s in result.stages:
        if s.index == 0:
            scaled = resize_image(image, plan.scales[0])
            caption = stage_caption(0, plan.scales[0])
            if tuple(plan.crop_wh) != tuple(plan.scales[0]):
                iw, ih = plan.input_wh
                caption += f" (As the original: its top-left {cw}x{ch} patch, resized to {iw}x{ih}.)"
            first = coarse_crop(lambda y0, y1, x0, x1, a=scaled: a[y0:y1, x0:x1], plan.crop_wh, plan.input_wh)
            title = "Stage 0: coarse segmentation"
            figs.append(stage_figure(first, s.argmax, class_names, palette, title=title, caption=caption))
            continue
        st = stage_plans[s.index]
        figs.append(stage_figure(
            resize_image(image, st.scale_wh), s.argmax, class_names, palette,
            uncertainty=np.asarray(s.uncertainty), error=None if s.error is None else np.asarray(s.error),
            boxes=np.asarray(st.crops_px), selected=s.selected,
            refined=None if s.refined is None else np.asarray(s.refined),
            title=f"Stage {s.index}: refinement at {st.scale_wh[0]}x{st.scale_wh[1]}",
            caption=stage_caption(s.index, st.scale_wh, st.n_total, st.k, s.points),
        ))  # fmt: skip
    return figs


def save_stage_figures(result, plan, image: np.ndarray, out_dir: str | os.PathLike, class_names: Sequence[str],
                       palette: np.ndarray, *, label: np.ndarray | None = None) -> list[str]:  # fmt: skip
    """Writes `stage{i}_figure.png` for every stage of `result` (see `stage_figures`) and
    `final_figure.png` (with the ground truth `label` `[H, W]` when given) into `out_dir`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for s, fig in zip(result.stages, stage_figures(result, plan, image, class_names, palette), strict=True):
        paths.append(os.path.join(os.fspath(out_dir), f"stage{s.index}_figure.png"))
        save_figure(fig, paths[-1])
    last = result.stages[-1]
    caption = f"MagNet's prediction after stage {last.index}, blended 50/50 over the image."
    fig = final_figure(image, last.argmax, class_names, palette, label=label, caption=caption)
    paths.append(os.path.join(os.fspath(out_dir), "final_figure.png"))
    save_figure(fig, paths[-1])
    return paths
