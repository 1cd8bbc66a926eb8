"""A synthetic high-resolution segmentation dataset where coarse-to-fine refinement has something to win.

Images are `size` x `size` (default 1024) RGB, 5 classes, deterministic per (seed, split, index):

0 background  smooth, slowly varying colour field.
1 stripes     blobs of 2-px stripes (period 4, vertical or horizontal) around a mean colour M1.
2 checker     blobs of a 2x2-px checkerboard (period 4) around the same M1.
3 warm shape  a large blob (about 0.35-0.7 of the image wide) filled with colour M2 and a warm halo band
              (0.035 of the image wide) along its border.
4 cool shape  the same blob distribution, the same fill M2, a cool halo band.
(One large shape per image, or two kept apart; 3-6 texture blobs, 0.1-0.26 of the image wide, centred
off the shapes.)

What makes it hard, by design:
- Classes 1 and 2 differ only in texture. The textures are aligned to the pixel grid, so the coarse view
  (the whole image resized 4x down with cv2 INTER_LINEAR, which averages pixels 4i+1 and 4i+2) turns both
  into the same flat M1: invisible at 256x256, visible at 512 (2x) and 1024 (1x). Coarse-only
  segmentation can only guess between them.
- Classes 3 and 4 differ only in the colour of the halo at the shape's border. The shapes are larger than
  a 256x256 patch of the 1024 scale, so a patch inside a shape sees only the fill M2, identical for both:
  patch-only segmentation can only guess there, while the whole (coarse) image shows the halo around it.
Per-image colour jitter keeps exact colours from being a shortcut; class-1/2 blobs and class-3/4 shapes
are drawn from the same distributions within each pair.

Written once in the file-list format (`<folder>/{split}.txt`, `image<TAB>label`, PNG images and
single-channel PNG class-id labels) so that it goes through the same path as real data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import cv2
import numpy as np

from magnet_jax.data.errors import DataError
from magnet_jax.data.labels import IdLabelDecoder
from magnet_jax.data.lists import write_file_list
from magnet_jax.preprocess import write_image

VERSION = 1
CLASS_NAMES = ("background", "stripes", "checker", "warm shape", "cool shape")
NUM_CLASSES = len(CLASS_NAMES)
PALETTE = ((40, 40, 40), (230, 200, 60), (60, 160, 230), (230, 90, 40), (40, 200, 160))
META_FILE = "synthetic.json"
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def label_decoder() -> IdLabelDecoder:
    """Labels are stored as class ids; anything else is an error."""
    return IdLabelDecoder({i: i for i in range(NUM_CLASSES)}, 255, strict=True, name="synthetic class ids")


def _smooth_field(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """`[size, size]` float32 smooth random field in [-amplitude, amplitude]."""
    grid = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).clip(-1, 1) * amplitude


def _blob_mask(rng: np.random.Generator, size: int, center: tuple[float, float], radius: float) -> np.ndarray:
    """`[size, size]` uint8 mask of a smooth random star-shaped blob."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4):
        r += rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.75, 1.0)
    x, y = radius * r * np.cos(theta), radius * r * aspect * np.sin(theta)
    xr = center[0] + x * np.cos(angle) - y * np.sin(angle)
    yr = center[1] + x * np.sin(angle) + y * np.cos(angle)
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(np.stack([xr, yr], -1) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _jitter(rng: np.random.Generator, color, amount: float = 10.0) -> np.ndarray:
    return np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def generate_sample(seed: int, split: str, index: int, size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One sample: image uint8 `[size, size, 3]` RGB, label uint8 `[size, size]` class ids."""
    if size % 4:
        raise DataError(f"config.data.synthetic.size must be a multiple of 4, got {size}")
    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split], int(index)])
    s = size
    yy, xx = np.mgrid[0:s, 0:s]

    image = np.empty((s, s, 3), np.float32)
    background = _jitter(rng, (96, 112, 88), 14)
    shade = _smooth_field(rng, s, 5, 20.0)
    image[:] = background + shade[..., None] * np.array([1.0, 0.9, 0.8], np.float32)
    label = np.zeros((s, s), np.uint8)

    # Large shapes (classes 3, 4): same fill, halo colour tells the class.
    fill = _jitter(rng, (118, 124, 170), 10)
    fill_shade = _smooth_field(rng, s, 4, 8.0)[..., None]
    halos = {3: _jitter(rng, (225, 120, 55), 12), 4: _jitter(rng, (55, 200, 205), 12)}
    halo_width = 0.035 * s
    shapes: list[tuple[np.ndarray, float]] = []
    for _ in range(1 if rng.uniform() < 0.6 else 2):
        cls = int(rng.integers(3, 5))
        radius = rng.uniform(0.22, 0.34) * s
        for _ in range(20):  # a second shape keeps away from the first
            center = rng.uniform(0.25 * s, 0.75 * s, 2)
            if all(np.hypot(*(center - c)) > r + 0.5 * radius for c, r in shapes):
                break
        shapes.append((center, radius))
        mask = _blob_mask(rng, s, tuple(center), radius)
        inside = mask.astype(bool)
        depth = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        band = inside & (depth <= halo_width)
        image[inside] = (fill + fill_shade)[inside]
        image[band] = halos[cls]
        label[inside] = cls

    # Texture blobs (classes 1, 2): same mean colour, texture visible only at >= 2x the coarse scale.
    mean = _jitter(rng, (170, 150, 118), 10)
    amp = rng.uniform(36, 50)
    contrast = np.array([1.0, 0.9, 1.1], np.float32) * amp
    stripes_v = ((xx // 2) % 2).astype(np.float32) * 2 - 1
    stripes_h = ((yy // 2) % 2).astype(np.float32) * 2 - 1
    checker = (((xx // 2) + (yy // 2)) % 2).astype(np.float32) * 2 - 1
    in_shape = label >= 3
    for _ in range(int(rng.integers(3, 7))):
        cls = int(rng.integers(1, 3))
        radius = rng.uniform(0.05, 0.13) * s
        for _ in range(20):  # centred off the large shapes, so that their insides stay large
            center = rng.uniform(0.05 * s, 0.95 * s, 2)
            if not in_shape[int(center[1]), int(center[0])]:
                break
        inside = _blob_mask(rng, s, tuple(center), radius).astype(bool)
        pattern = (stripes_v if rng.integers(0, 2) == 0 else stripes_h) if cls == 1 else checker
        image[inside] = mean + pattern[inside][:, None] * contrast
        label[inside] = cls
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def _meta(cfg) -> dict:
    return {
        "version": VERSION,
        "size": int(cfg.size),
        "seed": int(cfg.seed),
        "num_train": int(cfg.num_train),
        "num_val": int(cfg.num_val),
        "num_test": int(cfg.num_test),
    }


def _read_meta(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_dataset(folder: str, cfg) -> None:
    """Writes every split of the dataset described by `cfg` (config.data.synthetic) into `folder`."""
    meta = _meta(cfg)
    for split in ("train", "val", "test"):
        pairs = []
        os.makedirs(os.path.join(folder, split, "images"), exist_ok=True)
        os.makedirs(os.path.join(folder, split, "labels"), exist_ok=True)
        for i in range(meta[f"num_{split}"]):
            image, label = generate_sample(meta["seed"], split, i, meta["size"])
            image_rel = f"{split}/images/{i:04d}.png"
            label_rel = f"{split}/labels/{i:04d}.png"
            write_image(os.path.join(folder, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            write_image(os.path.join(folder, label_rel), label)
            pairs.append((image_rel, label_rel))
        write_file_list(os.path.join(folder, f"{split}.txt"), pairs)
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def ensure_dataset(folder: str, cfg) -> str:
    """Generates the dataset into `folder` unless it already holds this exact one (same size, seed, counts).

    A folder holding a different synthetic dataset is regenerated; a non-empty folder that is not a
    synthetic dataset is left alone (error). Generation goes to a temporary folder renamed at the end, so an
    interrupted run leaves nothing half-written.
    """
    for split in ("train", "val", "test"):
        if int(cfg[f"num_{split}"]) < 1:
            raise DataError(f"config.data.synthetic.num_{split} must be >= 1, got {cfg[f'num_{split}']}")
    meta = _meta(cfg)
    if _read_meta(folder) == meta:
        return folder
    if os.path.isdir(folder) and os.listdir(folder) and _read_meta(folder) is None:
        raise DataError(
            f"{folder!r} is not empty and is not a synthetic dataset (no {META_FILE}); refusing to write the "
            "synthetic dataset there. Point config.data.root elsewhere or empty the folder."
        )
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic_tmp_", dir=parent)
    try:
        write_dataset(tmp, cfg)
        if os.path.isdir(folder):
            if _read_meta(folder) == meta:  # another process finished first
                return folder
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if _read_meta(folder) != meta:  # not another process of this run finishing first
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def colorize(label: np.ndarray) -> np.ndarray:
    """Class ids `[H, W]` -> RGB uint8 `[H, W, 3]` with PALETTE (ignore -> white)."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[label]


def sample_picture(seed: int = 1234, split: str = "train", index: int | None = None, size: int = 1024) -> np.ndarray:
    """A 512x512 RGB overview of one sample (docs/synthetic_sample.png): top, the coarse view (whole image at
    256x256) and its labels; bottom, two 256x256 patches of the full-resolution image: textures, and the
    inside of a large shape. `index` None picks the first sample with both textures and a large shape."""
    from magnet_jax.preprocess import resize_image, resize_label

    candidates = range(64) if index is None else [index]
    for i in candidates:
        image, label = generate_sample(seed, split, i, size)
        if all((label == c).sum() > 0.01 * size * size for c in (1, 2)) and ((label == 3) | (label == 4)).any():
            break
    tile = size // 4
    step = max(tile // 8, 1)
    best_texture, best_inside = (-1, (0, 0)), (-1, (0, 0))
    shape = (label == 3) | (label == 4)
    depth = cv2.distanceTransform(np.pad(shape.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    fill_only = depth > 0.035 * size + 1
    for y in range(0, size - tile + 1, step):
        for x in range(0, size - tile + 1, step):
            window = label[y : y + tile, x : x + tile]
            score = min((window == 1).sum(), (window == 2).sum())
            best_texture = max(best_texture, (score, (x, y)))
            best_inside = max(best_inside, (int(fill_only[y : y + tile, x : x + tile].sum()), (x, y)))

    def crop(xy):
        x, y = xy
        return image[y : y + tile, x : x + tile]

    def caption(tile_image, text):
        out = cv2.resize(np.ascontiguousarray(tile_image), (256, 256), interpolation=cv2.INTER_NEAREST)
        cv2.rectangle(out, (0, 0), (255, 18), (0, 0, 0), -1)
        cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        return out

    coarse = resize_image(image, (256, 256))
    top = np.concatenate([caption(coarse, "coarse view 256x256: 1 = 2 here"),
                          caption(colorize(resize_label(label, (256, 256))), "labels (5 classes)")], 1)
    bottom = np.concatenate([caption(crop(best_texture[1]), "1024 patch: stripes vs checker"),
                             caption(crop(best_inside[1]), "1024 patch in a shape: 3 or 4?")], 1)
    return np.concatenate([top, bottom], 0)
