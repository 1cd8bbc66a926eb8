"""`config.predict.tissue_mask`: on a synthetic slide with 70% empty (white) background, only the patches over
tissue are refined, the pixels no refined patch covers are labelled 255 (not predicted), the tissue keeps
a prediction, and the run is faster (printed; not asserted: timings vary with the machine's load)."""

from __future__ import annotations

import time

import numpy as np

from magnet_jax.data.synthetic import generate_sample
from magnet_jax.inference.plan import make_plan
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.inference.tiled import StreamOptions
from magnet_jax.models import build_model
from magnet_jax.rasters.large_io import ImageSource
from magnet_jax.rasters.tissue import IGNORE, patches_with_tissue, tissue_mask

SIZE, TISSUE = 1024, 307  # the tissue: the left 30% of the columns; the rest is glass (white)


def _slide() -> np.ndarray:
    image = np.full((SIZE, SIZE, 3), 255, np.uint8)
    image[:, :TISSUE] = generate_sample(1234, "test", 0, SIZE)[0][:, :TISSUE] // 2  # darker than the glass
    return image


def test_tissue_mask_skips_empty_patches():
    image = _slide()
    mask = tissue_mask(ImageSource.from_array(image))
    cols = np.nonzero(mask.any(axis=0))[0]
    assert mask[:, : TISSUE - 1].all() and cols.max() <= TISSUE  # the tissue, dilated by one pixel
    boxes = np.array([[0, 0, 100, 100], [300, 0, 400, 50], [320, 500, 1024, 1024]], np.float32)
    assert patches_with_tissue(mask, boxes, (SIZE, SIZE)).tolist() == [True, True, False]
    assert tissue_mask(ImageSource.from_array(np.full((64, 64, 3), 200, np.uint8))).all()  # no contrast

    plan = make_plan([(256, 256), (SIZE, SIZE)], (128, 128), (64, 64), 4, n_points=0.2)
    models = build_model("small", 4, seed=0), build_model("refinement", 4, seed=1)
    labels, seconds = {}, {}
    predictors = {
        on: MagNetPredictor(plan, *models, stream=StreamOptions(mode="on", tile_patches=2, tissue_mask=on))
        for on in (False, True)
    }
    for on in (False, True, False, True):  # twice each: the first run of a predictor compiles
        predictor = predictors[on]
        t = time.perf_counter()
        res = predictor.predict(image)
        seconds[on] = time.perf_counter() - t
        labels[on] = res.labels.read(0, SIZE, 0, SIZE)
        res.close()
    kept = patches_with_tissue(mask, plan.stages[0].boxes, (SIZE, SIZE))
    print(f"patches refined {kept.sum()} of {kept.size}; seconds without the mask {seconds[False]:.2f}, "
          f"with it {seconds[True]:.2f}")  # fmt: skip
    assert kept.sum() <= 0.4 * kept.size
    on, off = labels[True], labels[False]
    assert (on[:, TISSUE + 128 :] == IGNORE).all()  # beyond the last tissue patch: not predicted
    assert (on[:, :TISSUE] < 4).all() and (off < 4).all()  # the tissue is predicted, and everything without it
    # the skipped patches keep the coarse prediction until the final labels, so their pixels never take points:
    # the point budget goes to the tissue (more refined pixels there than without the mask)
    assert res.stages[1].points == plan.stages[0].budget
