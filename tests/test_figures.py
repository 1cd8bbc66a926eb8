"""Captioned figures (`magnet_jax.visualization.figures`): panels, legends, colour bars, numbers, files."""

from __future__ import annotations

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from magnet_jax.inference.outputs import save_prediction
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.visualization import figures

NAMES = ["sky", "road", "tree"]
PALETTE = np.array([[0, 0, 200], [128, 128, 128], [0, 160, 0]], np.uint8)


class TinyBackbone(nnx.Module):
    def __init__(self, n: int):
        self.conv = nnx.Conv(3, n, (3, 3), padding="SAME", rngs=nnx.Rngs(0))

    def __call__(self, x):
        return 4.0 * self.conv(x)


class TinyRefiner(nnx.Module):
    def __init__(self, n: int):
        self.conv = nnx.Conv(2 * n, n, (3, 3), padding="SAME", rngs=nnx.Rngs(1))

    def __call__(self, fine, coarse):
        return 3.0 * self.conv(jnp.concatenate([fine, coarse], axis=-1))


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (40, 40, 200)
    img[h // 2 :, : w // 2] = (120, 120, 120)
    img[h // 2 :, w // 2 :] = (40, 170, 40)
    return np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)


def _legend_texts(fig) -> list[str]:
    legends = [lg for sub in fig.subfigs for lg in sub.legends]
    assert len(legends) == 1
    return [t.get_text() for t in legends[0].get_texts() if t.get_text().strip()]


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def _texts(fig) -> list[str]:
    return [t.get_text() for sub in fig.subfigs for t in sub.texts]


def test_stage_figure_panels_legend_colorbars(tmp_path):
    h, w = 40, 60
    pred = np.zeros((h, w), np.uint8)
    pred[20:, 30:] = 2
    refined = np.zeros((h, w), bool)
    refined[:10, :10] = True  # 100 points
    boxes = [(0, 0, 30, 20), (30, 0, 60, 20), (0, 20, 30, 40), (30, 20, 60, 40)]
    fig = figures.stage_figure(
        _image(h, w), pred, NAMES, PALETTE, uncertainty=np.linspace(0, 1, h * w).reshape(h, w),
        error=np.full((h, w), 0.25), boxes=boxes, selected=np.array([3, 0]), refined=refined,
        title="Stage 1", caption="what happened " * 30,
    )  # fmt: skip
    titles = _titles(fig)
    assert "patches chosen: 2 of 4" in titles
    assert "points refined: 100 (4.2% of pixels)" in titles  # 100 / 2400
    assert "input at 60x40" in titles and "prediction after this stage (60x40)" in titles
    assert _legend_texts(fig) == NAMES + ["patch refined (rank)", "patch not refined", "refined point"]
    colorbar_labels = sorted(ax.get_ylabel() for ax in fig.axes if ax.get_ylabel())
    assert colorbar_labels == ["1 - (p1 - p2)", "certainty(refined) x uncertainty"]
    patches_ax = next(ax for ax in fig.axes if ax.get_title().startswith("patches chosen"))
    rects = [p for p in patches_ax.patches if isinstance(p, Rectangle)]
    solid = [r for r in rects if np.allclose(r.get_edgecolor(), to_rgba(figures.SELECTED_COLOR))]
    assert len(rects) == 4 and len(solid) == 2
    assert sorted((r.get_x(), r.get_y()) for r in solid) == [(-0.5, -0.5), (29.5, 19.5)]  # boxes 0 and 3
    assert [t.get_text() for t in patches_ax.texts] == ["1", "2"]  # selection ranks
    texts = _texts(fig)
    assert texts[0] == "Stage 1" and texts[1].startswith("what happened") and "\n" in texts[1]  # wrapped caption
    path = tmp_path / "stage.png"
    figures.save_figure(fig, path)
    png = cv2.imread(str(path))
    width, height = fig.get_size_inches() * fig.dpi
    assert png.shape == (round(height), round(width), 3)


def test_stage0_figure_two_panels():
    fig = figures.stage_figure(_image(16, 16), np.ones((16, 16), np.uint8), NAMES, PALETTE, title="Stage 0")
    assert _titles(fig) == ["input at 16x16", "prediction (16x16)"]
    assert _legend_texts(fig) == NAMES
    assert not any(ax.get_ylabel() for ax in fig.axes)  # no colour bar


def test_evaluation_figure_accuracy_and_ignore(tmp_path):
    label = np.zeros((20, 20), np.uint8)
    label[:, 10:] = 1
    label[:2] = 255  # ignored: 40 pixels
    coarse = np.zeros((10, 10), np.uint8)  # resized nearest to 20x20: right on the left half only
    magnet = label.copy()
    magnet[:2] = 2  # wrong only where ignored
    path = tmp_path / "eval.png"
    fig = figures.evaluation_figure(_image(20, 20), label, {"coarse": coarse, "MagNet": magnet}, NAMES, PALETTE,
                                    path, title="img 0")  # fmt: skip
    assert _titles(fig) == ["image", "ground truth", "coarse\npixel accuracy 50.0%", "MagNet\npixel accuracy 100.0%"]
    assert _legend_texts(fig) == NAMES + ["ignored (no label)"]
    assert cv2.imread(str(path)) is not None
    assert figures.pixel_accuracy(coarse, label, 3) == 0.5


def test_progression_and_final_figures():
    label = np.zeros((32, 32), np.uint8)
    label[16:] = 1
    preds = {"stage 0": np.zeros((8, 8), np.uint8), "stage 1": label}
    fig = figures.progression_figure(preds, NAMES, PALETTE, image=_image(32, 32), label=label, caption="c")
    assert _titles(fig) == ["image", "stage 0\npixel accuracy 50.0%", "stage 1\npixel accuracy 100.0%", "ground truth"]
    fig = figures.final_figure(_image(32, 32), label, NAMES, PALETTE)
    assert _titles(fig) == ["image (32x32)", "prediction over the image", "prediction (32x32)"]
    assert _legend_texts(fig) == NAMES


def test_bad_palette_is_refused():
    with pytest.raises(ValueError, match="3 class names but a palette of 2 colours"):
        figures.final_figure(_image(8, 8), np.zeros((8, 8), np.uint8), NAMES, PALETTE[:2])


@pytest.fixture(scope="module")
def run():
    """A real MagNet run (tiny models): 2 scales, 2 of the 4 patches refined, 30% of the points."""
    plan = make_plan([(48, 32), (96, 64)], (48, 32), (24, 16), 3, n_patches=2, n_points=0.3, smooth_kernel=3,
                     patch_batch_size=2)  # fmt: skip
    predictor = MagNetPredictor(plan, TinyBackbone(3), [TinyRefiner(3)])
    image = _image(120, 170)
    return predictor, predictor.predict(image), image


def test_stage_figures_from_a_run(run):
    predictor, result, image = run
    figs = figures.stage_figures(result, predictor.plan, image, NAMES, PALETTE)
    assert len(figs) == 2
    for s, fig, st in zip(result.stages[1:], figs[1:], predictor.plan.stages, strict=True):
        mask = np.asarray(s.refined)
        assert mask.shape == st.size_hw and int(mask.sum()) == s.points > 0
        h, w = st.size_hw
        titles = _titles(fig)
        assert f"points refined: {s.points} ({100.0 * s.points / (h * w):.1f}% of pixels)" in titles
        assert f"patches chosen: 2 of {st.n_total}" in titles
        assert any(isinstance(hd, Line2D) for hd in fig.subfigs[0].legends[0].legend_handles)
        assert f"{st.n_total} patches, 2 are refined" in _texts(fig)[1].replace("\n", " ")


def test_save_prediction_writes_the_figures(run, tmp_path):
    predictor, result, image = run
    save_prediction(predictor, result, image, str(tmp_path), PALETTE, class_names=NAMES)
    for name in ("stage0_figure.png", "stage1_figure.png", "final_figure.png"):
        assert cv2.imread(str(tmp_path / name)) is not None, name
    assert (tmp_path / "stage1_96x64_overlay.png").is_file()
