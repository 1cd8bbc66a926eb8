"""The stage kernels of MagNet, each taking a region of a stage map: the one home of every step both the
whole-image and the tiled run perform.

A region is a window of a stage's full map `[H, W]` starting at `origin` (`[2]` int32, may be traced);
the whole image is the one-region case (origin 0, the window is the map). Positions and weights are always
those of the full map, so a tile computes the whole image's numbers bit for bit.

- host side: `patch_batch` (patches per device and call), `stage0_input` and `patch_inputs` (the
  original's input recipe: cv2 INTER_LINEAR at the scale, crop, resize to the input size, ImageNet
  normalisation);
- device side: `make_stage0_fn` (the coarse pass), `make_patch_map` (any per-patch function over a batch
  of patches, padded to one compiled size and split over the devices of a mesh), `make_refine_fn`
  (backbone + coarse crops + refiner through `models.refinement`), `make_patch_view_fn` (the backbone alone
  on every patch), `upsample_region`, `uncertainty`, `patch_scores`, `resize_to_box`, `make_argmax_fn`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from magnet_jax.inference.host_maps import ScaledImage
from magnet_jax.inference.plan import MagNetPlan, StagePlan
from magnet_jax.models import refinement
from magnet_jax.models.layers import conv_compute_dtype
from magnet_jax.ops.conv import forward_algorithm
from magnet_jax.ops.patches import certainty
from magnet_jax.ops.resize import resize_bilinear
from magnet_jax.ops.roi_align import required_samples, roi_align
from magnet_jax.preprocess import coarse_crop, normalize, resize_image
from magnet_jax.rasters.large_io import ImageSource
from magnet_jax.sharding import DATA_AXIS

__all__ = [
    "make_argmax_fn",
    "make_patch_map",
    "make_patch_view_fn",
    "make_refine_fn",
    "make_stage0_fn",
    "patch_batch",
    "patch_inputs",
    "patch_scores",
    "prepare_patches",
    "resize_to_box",
    "stage0_input",
    "uncertainty",
    "upsample_region",
]

RegionReader = Callable[[int, int, int, int], np.ndarray]  # (y0, y1, x0, x1) -> [h, w, 3] uint8 of a scale


# ----------------------------------------------------------------------------- host side


def patch_batch(stage: StagePlan, plan: MagNetPlan) -> int:
    """Patches per device and compiled call: `config.magnet.patch_batch_size` (0: 1 on CPU, where larger
    batches only cost memory and time, 8 on accelerators), never more than the patches refined."""
    size = int(plan.patch_batch_size) or (1 if jax.default_backend() == "cpu" else 8)
    return max(1, min(size, stage.k))


def stage0_input(read_scale0: RegionReader, plan: MagNetPlan) -> np.ndarray:
    """The coarse input `[1, ih, iw, 3]` float32 (`preprocess.coarse_crop`, normalised)."""
    return normalize(coarse_crop(read_scale0, plan.crop_wh, plan.input_wh)[None])


def patch_inputs(read_scale: RegionReader, stage: StagePlan, plan: MagNetPlan, ids) -> np.ndarray:
    """Normalised input patches `[n, ih, iw, 3]` float32 of grid patches `ids` at the stage's scale.

    One region read covers every crop (the whole scale when `ids` is the whole grid).
    """
    crops = np.asarray([stage.crops_px[int(n)] for n in ids]).reshape(-1, 4)
    x0, y0, x1, y1 = int(crops[:, 0].min()), int(crops[:, 1].min()), int(crops[:, 2].max()), int(crops[:, 3].max())
    region = read_scale(y0, y1, x0, x1)
    out = [
        resize_image(np.ascontiguousarray(region[b - y0 : d - y0, a - x0 : c - x0]), plan.input_wh)
        for a, b, c, d in crops
    ]
    return normalize(np.stack(out))


def prepare_patches(image: np.ndarray, plan: MagNetPlan) -> list[np.ndarray]:
    """The whole image's inputs: `[stage0 [1, ih, iw, 3]] + [stage i [N_i, ih, iw, 3] per refinement stage]`
    float32 (`kernels.stage0_input` / `kernels.patch_inputs`, the original's recipe)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    source = ImageSource.from_array(image)
    out = [stage0_input(ScaledImage(source, plan.scales[0]).read, plan)]
    for stage in plan.stages:
        out.append(patch_inputs(ScaledImage(source, stage.scale_wh).read, stage, plan, range(stage.n_total)))
    return out


# ----------------------------------------------------------------------------- device side


def _compute_settings(dtype: str, conv_algorithm: str):
    stack = contextlib.ExitStack()
    stack.enter_context(conv_compute_dtype(dtype))
    stack.enter_context(forward_algorithm(conv_algorithm))
    return stack


def make_stage0_fn(backbone_graphdef, *, dtype: str = "float32", conv_algorithm: str = "auto") -> Callable:
    """`stage0(backbone_state, patch [1, ih, iw, 3]) -> (probs [ih, iw, C], argmax [ih, iw] uint8)` (jitted).

    `dtype`: the convolutions' operand dtype (`plan.dtype`, see `models.layers.conv_compute_dtype`);
    `conv_algorithm`: their forward algorithm (`plan.conv_algorithm`, see `ops.conv.forward_algorithm`).
    """

    @jax.jit
    def stage0(backbone_state, patch):
        with _compute_settings(dtype, conv_algorithm):
            logits = nnx.merge(backbone_graphdef, backbone_state)(patch)
        probs = refinement.class_probabilities(logits)[0]
        return probs, jnp.argmax(probs, axis=-1).astype(jnp.uint8)

    return stage0


def make_patch_map(body: Callable, mesh: Mesh | None, *, batch: int, n_shared: int) -> Callable:
    """`fn(*shared, patches [G, ...], ids [G]) -> [G, ...]`: `body(*shared, patches [b, ...], ids [b])` over
    sub-batches of `batch` (`lax.map`), the `G` patches split over the mesh's `data` axis (`shard_map`;
    `G` a multiple of `batch` x devices). Not jitted: call it inside `jax.jit`. With `mesh=None` the
    whole batch runs on one device. Every device runs the same program per patch, so the numbers do not
    depend on the device count.
    """

    def per_device(*args):
        shared, patches, ids = args[:n_shared], args[n_shared], args[n_shared + 1]
        n = patches.shape[0]
        xs = (patches.reshape((n // batch, batch) + patches.shape[1:]), ids.reshape(n // batch, batch))
        out = jax.lax.map(lambda x: body(*shared, *x), xs)
        return out.reshape((n,) + out.shape[2:])

    if mesh is None:
        return per_device
    spec = PartitionSpec
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(spec(),) * n_shared + (spec(DATA_AXIS), spec(DATA_AXIS)),
        out_specs=spec(DATA_AXIS),
    )


def padded_count(n: int, batch: int, mesh: Mesh | None) -> int:
    """`n` patches rounded up to whole calls of `batch` x devices."""
    g = batch * (1 if mesh is None else int(mesh.devices.size))
    return -(-n // g) * g


def make_refine_fn(
    backbone_graphdef, refiner_graphdef, mesh: Mesh | None, *, batch: int, boxes: np.ndarray,
    input_hw: tuple[int, int], full_hw: tuple[int, int], dtype: str = "float32", conv_algorithm: str = "auto",
) -> Callable:  # fmt: skip
    """`refine(bb_state, rf_state, probs_region [RH, RW, C], origin [2], patches [G, ih, iw, 3], ids [G])
    -> R [G, ih, iw, C]` (not jitted; see `make_patch_map`).

    `R = softmax(refiner(softmax(backbone(patch)), RoI Align(P, box)))` for the grid patches `ids`
    (`models.refinement.refiner_inputs` / `refine`), the coarse crops taken from the P region at `origin`
    of the stage's `full_hw` map; `boxes`: the stage's `[N, 4]` float32 boxes in full-map pixels.
    """
    max_samples = required_samples(boxes, input_hw)
    table = np.asarray(boxes, np.float32)

    def body(backbone_state, refiner_state, probs, origin, images, ids):
        backbone = nnx.merge(backbone_graphdef, backbone_state)
        refiner = nnx.merge(refiner_graphdef, refiner_state)
        crop_boxes = jnp.take(jnp.asarray(table), ids, axis=0)
        with _compute_settings(dtype, conv_algorithm):
            fine, coarse = refinement.refiner_inputs(
                backbone, images, probs, crop_boxes, max_samples=max_samples, full_hw=full_hw, origin=origin
            )
            return refinement.class_probabilities(refinement.refine(refiner, fine, coarse))

    return make_patch_map(body, mesh, batch=batch, n_shared=4)


def make_patch_view_fn(backbone_graphdef, stage: StagePlan, plan: MagNetPlan, mesh: Mesh | None) -> Callable:
    """`fn(backbone_state, patches [N, ih, iw, 3]) -> probs [H, W, C]` (jitted) at the stage's scale: the
    backbone alone on every patch of the grid, pasted with overlaps averaged (no refinement)."""
    from magnet_jax.ops.ensemble import ensemble_patches

    n = stage.n_total
    batch = max(1, min(patch_batch(stage, plan), n))
    total = padded_count(n, batch, mesh)

    def body(backbone_state, images, _ids):
        with _compute_settings(plan.dtype, plan.conv_algorithm):
            return refinement.class_probabilities(nnx.merge(backbone_graphdef, backbone_state)(images))

    mapped = make_patch_map(body, mesh, batch=batch, n_shared=1)

    @jax.jit
    def patch_view(backbone_state, patches):
        ids = jnp.concatenate([jnp.arange(n, dtype=jnp.int32), jnp.zeros((total - n,), jnp.int32)])
        probs = mapped(backbone_state, jnp.take(patches, ids, axis=0), ids)[:n]
        return ensemble_patches(probs, stage.ratios, stage.scale_wh, "average")[0]

    return patch_view


def _lerp(x: jax.Array, i0, i1, w0, w1, axis: int) -> jax.Array:
    """`ops.resize`'s two-tap lerp with the taps as arrays: two gathers and a lerp along `axis`."""
    shape = [1] * x.ndim
    shape[axis] = i0.shape[0]
    return jnp.take(x, i0, axis=axis) * w0.reshape(shape) + jnp.take(x, i1, axis=axis) * w1.reshape(shape)


@functools.partial(jax.jit, static_argnames=("skip_h", "skip_w"))
def upsample_region(prev, rows, cols, *, skip_h: bool, skip_w: bool) -> jax.Array:
    """Bilinear (align_corners=False) resizing of a region: `prev [ph, pw, C]` window -> `[RH, RW, C]` float32.

    `rows` / `cols`: `(i0, i1, w0, w1)` taps relative to the window (`tiling.taps_for`); rows first, then
    columns, an axis whose size does not change is left alone (as `ops.resize.resize_bilinear`).
    """
    x = prev.astype(jnp.float32)
    if not skip_h:
        x = _lerp(x, *rows, axis=0)
    if not skip_w:
        x = _lerp(x, *cols, axis=1)
    return x


@jax.jit
def uncertainty(probs: jax.Array) -> jax.Array:
    """`1 - certainty(P)`: `[h, w, C]` -> `[h, w]` (step 2)."""
    return 1.0 - certainty(probs)


@functools.partial(jax.jit, static_argnames=("input_hw", "max_samples", "full_hw"))
def patch_scores(unc, boxes, origin, *, input_hw, max_samples, full_hw) -> jax.Array:
    """The selection score per patch (step 3): mean RoI Align of the uncertainty `[RH, RW]` region at
    `origin` over `boxes [n, 4]` (full-map pixels) -> `[n]`."""
    crops = roi_align(unc[..., None], boxes, input_hw, max_samples=max_samples, full_hw=full_hw, origin=origin)
    return crops.mean(axis=(1, 2, 3))


@functools.partial(jax.jit, static_argnames=("box_hw",))
def resize_to_box(refined: jax.Array, *, box_hw: tuple[int, int]) -> jax.Array:
    """Refined patches `[n, ih, iw, C]` resized to the patch box `[n, bh, bw, C]` (as the ensemble does)."""
    return resize_bilinear(refined, box_hw, align_corners=False)


def make_argmax_fn(out_hw: tuple[int, int]) -> Callable:
    """`fn(probs [h, w, C]) -> argmax [H, W] uint8` after bilinear(ac=False) resizing to `out_hw` (jitted)."""

    @jax.jit
    def final(probs):
        up = resize_bilinear(probs[None].astype(jnp.float32), out_hw, align_corners=False)[0]
        return jnp.argmax(up, axis=-1).astype(jnp.uint8)

    return final
