"""Per-sample transforms: MagNet refiner training pairs, backbone training samples, evaluation samples.

All randomness comes from the `rng: np.random.Generator` argument, so a sample is a pure function
of (example, rng). Examples hold `"image"` (uint8 `[H, W, 3]` RGB) and either `"label"` (decoded
class ids `[H, W]`) or `"raw_label"` (undecoded) plus a `label_decoder`; raw labels are cropped and
resized (nearest) before decoding, which gives the same result as decoding first because decoding is
a per-pixel table look-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from magnet_jax.ops.patches import patch_grid_px as patch_grid
from magnet_jax.preprocess import normalize, resize_image, resize_label

Size = tuple[int, int]  # (W, H)


def _label_and_decoder(example: dict, label_decoder: Callable | None) -> tuple[np.ndarray, Callable]:
    if "label" in example:
        return np.asarray(example["label"]), lambda x: x
    if "raw_label" not in example:
        raise KeyError("example needs 'label' (class ids) or 'raw_label' with a label_decoder")
    if label_decoder is None:
        raise ValueError("example has a 'raw_label' but no label_decoder was given")
    where = example.get("label_path", example.get("name", ""))
    return np.asarray(example["raw_label"]), lambda x: label_decoder(x, where=where)


def _randint(rng: np.random.Generator, high: int) -> int:
    """Uniform in [0, high) like the original's np.random.randint(0, high); 0 when high <= 0."""
    return int(rng.integers(0, high)) if high > 0 else 0


def refiner_pair(example: dict, *, scales: Sequence[Size], crop_wh: Size, input_wh: Size,
                 rng: np.random.Generator, label_decoder: Callable | None = None) -> dict[str, np.ndarray]:
    """One refinement-module training pair (MAGNET_SPEC section 4, the original's RandomPair).

    `scales` is the whole scale list (config.magnet.scales, (W, H) each); the fine scale is drawn
    uniformly from `scales[1:]` (from `scales` when it has one entry).
    1. coarse image = whole image resized (cv2 linear) to `input_wh`.
    2. image (linear) and label (nearest) resized to the scale S; crop origin x uniform in
       [0, S_w - C_w), y in [0, S_h - C_h) (0 when the crop fills the scale, where the original fails).
    3. box in coarse-image pixels, unrounded: x0 = x / S_w * in_w, y0 = y / S_h * in_h,
       x1 = x0 + C_w / S_w * in_w, y1 = y0 + C_h / S_h * in_h.
    4. crop resized to `input_wh` (image linear, label nearest).

    Returns coarse_image, fine_image float32 `[in_h, in_w, 3]` ImageNet-normalised, box float32 `[4]`
    (x0, y0, x1, y1), label int32 `[in_h, in_w]`.
    """
    image = np.asarray(example["image"])
    label, decode = _label_and_decoder(example, label_decoder)
    in_w, in_h = int(input_wh[0]), int(input_wh[1])
    crop_w, crop_h = int(crop_wh[0]), int(crop_wh[1])
    candidates = list(scales[1:]) if len(scales) > 1 else list(scales)
    scale_w, scale_h = (int(v) for v in candidates[int(rng.integers(0, len(candidates)))])
    if crop_w > scale_w or crop_h > scale_h:
        raise ValueError(f"crop {crop_w}x{crop_h} is larger than scale {scale_w}x{scale_h}")

    coarse = resize_image(image, (in_w, in_h))
    fine_full = resize_image(image, (scale_w, scale_h))
    label_full = resize_label(label, (scale_w, scale_h))
    x = _randint(rng, scale_w - crop_w)
    y = _randint(rng, scale_h - crop_h)
    x0 = x * 1.0 / scale_w * in_w
    y0 = y * 1.0 / scale_h * in_h
    x1 = x0 + crop_w * 1.0 / scale_w * in_w
    y1 = y0 + crop_h * 1.0 / scale_h * in_h
    fine = resize_image(np.ascontiguousarray(fine_full[y : y + crop_h, x : x + crop_w]), (in_w, in_h))
    fine_label = resize_label(np.ascontiguousarray(label_full[y : y + crop_h, x : x + crop_w]), (in_w, in_h))
    return {
        "coarse_image": normalize(coarse),
        "fine_image": normalize(fine),
        "box": np.array([x0, y0, x1, y1], np.float32),
        "label": decode(fine_label).astype(np.int32),
    }


def jitter_scales(scale_jitter: tuple[float, float]) -> np.ndarray:
    """The original's discrete multi-scale factors: lo, lo + 0.1, ..., up to hi (0.5..2.1 there)."""
    lo, hi = float(scale_jitter[0]), float(scale_jitter[1])
    steps = int(round((hi - lo) * 10))
    return np.round(lo + 0.1 * np.arange(steps + 1), 6)


def backbone_sample(example: dict, *, input_wh: Size, rng: np.random.Generator,
                    crop_sizes: Sequence[Size] | None = None, scale_jitter: tuple[float, float] | None = None,
                    flip: bool = True, ignore_label: int = 255, label_decoder: Callable | None = None
                    ) -> dict[str, np.ndarray]:
    """One backbone training sample (MAGNET_SPEC section 4, the original's HRNet-based loader).

    1. `crop_sizes` (DeepGlobe: 612/1224/2448): one size drawn uniformly (clipped to the image), cut at a
       uniform origin in [0, W - w] x [0, H - h] (the original always cut its smallest crop at the top-left
       corner, a defect not reproduced).
    2. resize to `input_wh` (image linear, label nearest) — Cityscapes: the whole image to 256x128.
    3. `scale_jitter` (lo, hi): factor s from {lo, lo + 0.1, ..., hi}; the long side becomes
       int(long * s + 0.5), the short side int(short * long' / long + 0.5); then padded (image black,
       label `ignore_label`) to at least `input_wh` and cropped to `input_wh` at a uniform origin.
    4. `flip`: horizontal flip with probability 1/2.

    Returns image float32 `[in_h, in_w, 3]` normalised, label int32 `[in_h, in_w]`.
    """
    image = np.asarray(example["image"])
    label, decode = _label_and_decoder(example, label_decoder)
    in_w, in_h = int(input_wh[0]), int(input_wh[1])
    if crop_sizes:
        cw, ch = (int(v) for v in crop_sizes[int(rng.integers(0, len(crop_sizes)))])
        h, w = image.shape[:2]
        cw, ch = min(cw, w), min(ch, h)
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        image = image[y : y + ch, x : x + cw]
        label = label[y : y + ch, x : x + cw]
    image = resize_image(np.ascontiguousarray(image), (in_w, in_h))
    label = resize_label(np.ascontiguousarray(label), (in_w, in_h))
    label = decode(label)
    if scale_jitter is not None:
        factors = jitter_scales(scale_jitter)
        s = float(factors[int(rng.integers(0, len(factors)))])
        h, w = image.shape[:2]
        if w >= h:
            new_w = int(w * s + 0.5)
            new_h = int(h * new_w / w + 0.5)
        else:
            new_h = int(h * s + 0.5)
            new_w = int(w * new_h / h + 0.5)
        image = resize_image(image, (new_w, new_h))
        label = resize_label(label, (new_w, new_h))
        pad_h, pad_w = max(in_h - new_h, 0), max(in_w - new_w, 0)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=ignore_label)
        x = int(rng.integers(0, image.shape[1] - in_w + 1))
        y = int(rng.integers(0, image.shape[0] - in_h + 1))
        image = image[y : y + in_h, x : x + in_w]
        label = label[y : y + in_h, x : x + in_w]
    if flip and rng.integers(0, 2) == 1:
        image = image[:, ::-1]
        label = label[:, ::-1]
    return {"image": normalize(np.ascontiguousarray(image)), "label": np.ascontiguousarray(label).astype(np.int32)}


def scale_patches(image: np.ndarray, scale_wh: Size, crop_wh: Size, input_wh: Size) -> tuple[np.ndarray, np.ndarray]:
    """Whole image resized to the scale, cut into the patch grid, each patch resized to `input_wh`, normalised.

    Returns patches float32 `[n, in_h, in_w, 3]` and boxes float32 `[n, 4]` as ratios
    (x0 / S_w, y0 / S_h, x1 / S_w, y1 / S_h), in the grid's order.
    """
    scaled = resize_image(np.asarray(image), tuple(int(v) for v in scale_wh))
    grid = patch_grid(scale_wh, crop_wh)
    sw, sh = float(scale_wh[0]), float(scale_wh[1])
    patches = [normalize(resize_image(np.ascontiguousarray(scaled[y0:y1, x0:x1]), input_wh)) for x0, y0, x1, y1 in grid]
    boxes = np.array([(x0 / sw, y0 / sh, x1 / sw, y1 / sh) for x0, y0, x1, y1 in grid], np.float32)
    return np.stack(patches), boxes


def eval_sample(example: dict, *, scales: Sequence[Size] | None = None, crop_wh: Size | None = None,
                input_wh: Size | None = None, with_patches: bool = True,
                label_decoder: Callable | None = None) -> dict:
    """An evaluation sample: the full image (uint8 `[H, W, 3]`), its label (uint8 `[H, W]`), its name and,
    with `with_patches`, for every scale s: `patches[s]` float32 `[n_s, in_h, in_w, 3]` (normalised) and
    `boxes[s]` float32 `[n_s, 4]` (ratios), as the original's test loader cut them."""
    label, decode = _label_and_decoder(example, label_decoder)
    out = {"image": np.asarray(example["image"]), "label": decode(label), "name": example.get("name", "")}
    if with_patches:
        if scales is None or crop_wh is None or input_wh is None:
            raise ValueError("with_patches needs scales, crop_wh and input_wh")
        cut = [scale_patches(out["image"], s, crop_wh, input_wh) for s in scales]
        out["patches"] = [p for p, _ in cut]
        out["boxes"] = [b for _, b in cut]
    return out
