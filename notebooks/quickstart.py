# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # MagNet, quick look: one image through every stage
#
# MagNet (Huynh et al., CVPR 2021) segments a high-resolution image from coarse to fine: a backbone
# segments the whole image at a small scale, then at each larger scale the most uncertain patches are
# segmented again and a refinement module merges them with the coarse prediction.
#
# This notebook runs one image through magnet-jax and shows what every stage does. By default it uses
# the synthetic main job's weights, so nothing is downloaded: run
# `python main.py --config configs/synthetic.py --workdir runs/synthetic` once, then
# `jupyter lab notebooks/quickstart.ipynb` (or `python notebooks/quickstart.py`, with
# `QUICKSTART_SAVE_DIR` set to get the figures as PNG files).
#
# `notebooks/quickstart.py` is the source (jupytext percent format); the `.ipynb` is generated from it with
# `jupytext --update --to ipynb notebooks/quickstart.py`.

# %% [markdown]
# ## Parameters
# Every path can be changed here or through the environment variable named beside it (CI points them at a
# smoke run); relative paths are relative to the repository.

# %% tags=["parameters"]
import os

WORKDIR = os.environ.get("QUICKSTART_WORKDIR", "runs/synthetic")  # a finished training run
CONFIG = os.environ.get("QUICKSTART_CONFIG", "configs/synthetic.py")  # config file, or file:variant
# weights: converted folders or original .pth files; refiners: one (shared) or one per stage, comma-separated
BACKBONE = os.environ.get("QUICKSTART_BACKBONE", f"{WORKDIR}/weights/backbone")
REFINERS = os.environ.get("QUICKSTART_REFINERS", f"{WORKDIR}/weights/refiner")
IMAGE = os.environ.get("QUICKSTART_IMAGE", "")  # an image file; empty: the first synthetic test image of WORKDIR
LABEL = os.environ.get("QUICKSTART_LABEL", "")  # its ground truth (class-id PNG), optional
OVERRIDES = os.environ.get("QUICKSTART_OVERRIDES", "")  # config changes, e.g. "magnet.n_patches=4 magnet.n_points=0.2"
SAVE_DIR = os.environ.get("QUICKSTART_SAVE_DIR", "")  # folder to save every figure as PNG; empty: only show them

# %% [markdown]
# ## Setup
# Imports straight from the repository (no install needed), and JAX's persistent compilation cache so that a
# second run reuses the compiled stages.

# %%
# %matplotlib inline
# ruff: noqa: E402 (cells import what they use, after the parameters)
import runpy
import sys
import time
from pathlib import Path

import cv2

try:
    get_ipython()  # noqa: F821 (defined in Jupyter and IPython)
    from IPython.display import display
except NameError:  # a plain `python notebooks/quickstart.py`: figures are only saved (QUICKSTART_SAVE_DIR)
    display = lambda fig: None

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "magnet_jax").is_dir())
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

from magnet_jax.compile_cache import enable_compilation_cache
from magnet_jax.config import validate_config
from magnet_jax.data import dataset_spec
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.preprocess import read_image_rgb
from magnet_jax.visualization import figures

enable_compilation_cache()


def show(fig, name: str) -> None:
    """Displays a figure, and saves it as SAVE_DIR/name.png when SAVE_DIR is set."""
    display(fig)
    if SAVE_DIR:
        Path(SAVE_DIR).mkdir(parents=True, exist_ok=True)
        figures.save_figure(fig, Path(SAVE_DIR) / f"{name}.png")


# %% [markdown]
# ## Configuration
# The config fixes MagNet's plan: the scales, the patch size, and how many patches and points each stage refines.

# %%
def load_config(spec: str, overrides: str = ""):
    """`configs/x.py` or `configs/x.py:variant` -> its get_config(), with `key=value` overrides applied."""
    path, _, variant = spec.partition(":")
    get_config = runpy.run_path(path)["get_config"]
    config = get_config(variant) if variant else get_config()
    for item in overrides.split():
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        old = node[leaf]
        node[leaf] = value.lower() in ("1", "true", "yes") if isinstance(old, bool) else type(old)(value)
    return config


config = load_config(CONFIG, OVERRIDES)
config.checkpoint.backbone = BACKBONE
config.checkpoint.refiners = REFINERS
validate_config(config)
for path in [BACKBONE, *REFINERS.split(",")]:
    if not Path(path.strip()).exists():
        raise FileNotFoundError(
            f"{path}: no such weights. Train first (python main.py --config configs/synthetic.py --workdir "
            "runs/synthetic) or set QUICKSTART_BACKBONE / QUICKSTART_REFINERS (converted folders or .pth files)."
        )
dataset = dataset_spec(config)
class_names, palette = list(dataset.class_names), dataset.palette
print(f"{CONFIG}: {config.data.name}, {len(class_names)} classes: {', '.join(class_names)}")

# %% [markdown]
# ## Models and plan
# MagNet uses one segmentation backbone at every scale and a refinement module (here one, shared by all
# stages); the plan below fixes every array shape before any image is seen.

# %%
t = time.perf_counter()
predictor = MagNetPredictor.from_config(config)
print(f"models loaded in {time.perf_counter() - t:.1f} s from {BACKBONE} and {REFINERS}")
print(predictor.plan.describe())

# %% [markdown]
# ## The image
# MagNet takes an RGB image of any size; each scale of the plan sees a resized copy of it.

# %%
if not IMAGE:
    data = Path(WORKDIR) / "synthetic_data"
    first = (data / "test.txt").read_text().splitlines()[0].split("\t")
    IMAGE, LABEL = str(data / first[0]), str(data / first[1])
image = read_image_rgb(IMAGE)
label = cv2.imread(LABEL, cv2.IMREAD_UNCHANGED) if LABEL else None
print(f"{IMAGE}: {image.shape[1]}x{image.shape[0]}" + (f", ground truth {LABEL}" if LABEL else ""))

# %% [markdown]
# ## Run MagNet
# Every stage is compiled once, on the first call (here on a blank image), and reused for every image of the
# same plan; the second call shows the real speed.

# %%
compile_s = predictor.warmup()
result = predictor.predict(image)
print(f"first call (compilation): {compile_s:.1f} s; this image: {result.seconds:.2f} s")

# %% [markdown]
# ## Stage 0: the coarse prediction
# The backbone segments the whole image at the smallest scale; every later stage only refines this prediction.

# %%
stage_figs = figures.stage_figures(result, predictor.plan, image, class_names, palette)
show(stage_figs[0], "stage0")

# %% [markdown]
# ## The refinement stages
# At each larger scale MagNet upsamples the prediction, ranks the patches by their uncertainty, refines the
# chosen ones (backbone on the patch + refinement module fed with the coarse prediction) and writes the refined
# values at the points with the highest error score.

# %%
for s, fig in zip(result.stages[1:], stage_figs[1:], strict=True):
    show(fig, f"stage{s.index}")

# %% [markdown]
# ## The final result
# MagNet's output is its last stage's prediction, resized to the image.

# %%
final = predictor.final_argmax(result, image.shape[:2])
last_h, last_w = predictor.plan.last_hw
caption = f"MagNet's prediction after its last stage ({last_w}x{last_h}), resized to the image."
show(figures.final_figure(image, final, class_names, palette, label=label, caption=caption), "final")

# %% [markdown]
# ## From coarse to fine
# The prediction after every stage, side by side: each scale corrects what the smaller ones could not see.

# %%
preds = {
    f"stage {s.index} ({s.size_hw[1]}x{s.size_hw[0]})": predictor.argmax_at(s.probs, image.shape[:2])
    for s in result.stages
}
caption = "Each stage's prediction, resized to the image" + (", with its pixel accuracy." if LABEL else ".")
title = "MagNet from coarse to fine: the prediction after each stage"
fig = figures.progression_figure(preds, class_names, palette, image=image, label=label, title=title, caption=caption)
show(fig, "progression")

# %% [markdown]
# ## Timings
# Where the time goes for this image: host preprocessing (resizing, cutting the patches), then each stage.

# %%
for name, seconds in result.timings.items():
    s = next((s for s in result.stages if f"stage{s.index}" == name), None)
    extra = f"  ({s.points} points refined)" if s is not None and s.index > 0 else ""
    print(f"{name:>10s} {1000 * seconds:9.1f} ms{extra}")

# %% [markdown]
# ## The plan
# What each stage was compiled for, as MagNet ran it.

# %%
print(predictor.plan.describe())
