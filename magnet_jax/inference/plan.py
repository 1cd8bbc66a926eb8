"""The static plan of a MagNet run: everything about each stage that fixes array shapes.

A plan is computed once from the configuration (or explicit arguments) before any image is seen:
per stage the scale, its patch grid, how many patches are refined (`k`), the point budget and the
smoothing kernel. Stage functions are compiled for these numbers, so the shapes of every array in
a run are known in advance and never depend on the data (see `stages.py`).

Definitions follow the original MagNet (MAGNET_SPEC.md section 2):
- patch grid per axis: `n = ceil(S / C)`, `step = int(C - (n*C - S) / max(n-1, 1))`, x-major;
- `k = N` for `n_patches == -1` (full MagNet), else `min(n_patches, N)`;
- point budget: `min(int(n_points), S_w*S_h*k/N)` when `n_points > 1`, else
  `int(S_w*S_h*n_points*k/N)`; never more than the stage's pixel count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from magnet_jax.field_checks import COMPAT_MODES, CONV_ALGORITHMS, DTYPES, check_choice, check_scales, check_size
from magnet_jax.ops.patches import patch_boxes_px, patch_grid, patch_grid_px


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One refinement stage (index >= 1) of the plan."""

    index: int
    scale_wh: tuple[int, int]
    ratios: np.ndarray  # [N, 4] float64 patch-grid ratios (x0, y0, x1, y1)
    crops_px: tuple[tuple[int, int, int, int], ...]  # [N] integer crop boxes in scale pixels
    k: int  # patches refined (selected) at this stage
    budget: int  # points written into the probability map (before masking)
    smooth_kernel: int
    zero_error_in_mask: bool  # reference: the original's `n_patches > 0` branch (defect 2)
    filter_points_by_mask: bool  # keep only points inside the refined patches

    @property
    def n_total(self) -> int:
        return int(self.ratios.shape[0])

    @property
    def size_hw(self) -> tuple[int, int]:
        return (self.scale_wh[1], self.scale_wh[0])

    @property
    def boxes(self) -> np.ndarray:
        """`[N, 4]` float32 boxes in pixels of this scale (ratios x scale, computed in float32 as the original)."""
        return patch_boxes_px(self.ratios, self.scale_wh)


@dataclasses.dataclass(frozen=True)
class MagNetPlan:
    """The whole run: stage 0 (coarse) then `len(stages)` refinement stages."""

    scales: tuple[tuple[int, int], ...]  # (W, H) per stage, increasing
    crop_wh: tuple[int, int]
    input_wh: tuple[int, int]
    num_classes: int
    n_patches: int
    n_points: float
    compat: str
    patch_batch_size: int  # 0: auto (1 on CPU, where batching does not pay, 8 on accelerators)
    stage0_ratios: np.ndarray  # [N0, 4] grid of scale 0; the backbone sees its first patch
    stages: tuple[StagePlan, ...]
    dtype: str = "float32"  # convolution operands (bfloat16: accumulated in float32); the rest stays float32
    conv_algorithm: str = "auto"  # 3x3 convolutions: auto (Winograd on CPU where it pays) | direct | winograd

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.input_wh[1], self.input_wh[0])

    @property
    def last_hw(self) -> tuple[int, int]:
        return (self.scales[-1][1], self.scales[-1][0])

    @property
    def num_refiners_expected(self) -> int:
        return len(self.scales) - 1

    def truncated(self, num_stages: int) -> MagNetPlan:
        """The same plan stopped after refinement stage `num_stages` (0: coarse only); stages are unchanged."""
        if not 0 <= num_stages <= len(self.stages):
            raise ValueError(f"a plan with {len(self.stages)} refinement stages cannot keep {num_stages}")
        return dataclasses.replace(self, scales=self.scales[: num_stages + 1], stages=self.stages[:num_stages])

    def describe(self) -> str:
        lines = [
            f"MagNet plan ({self.compat}): input {self.input_wh[0]}x{self.input_wh[1]}, crop "
            f"{self.crop_wh[0]}x{self.crop_wh[1]}, n_patches {self.n_patches}, n_points {self.n_points:g}, "
            f"{self.dtype}, conv {self.conv_algorithm}",
            f"  stage 0: scale {self.scales[0][0]}x{self.scales[0][1]} (coarse)",
        ]
        for st in self.stages:
            lines.append(
                f"  stage {st.index}: scale {st.scale_wh[0]}x{st.scale_wh[1]}, {st.n_total} patches, refine {st.k}, "
                f"{st.budget} points, median {st.smooth_kernel}"
            )
        return "\n".join(lines)


def point_budget(scale_wh: tuple[int, int], n_points: float, k: int, n_total: int) -> int:
    """The original's point count for a stage (Python float arithmetic in its order), capped at the pixel count."""
    w, h = scale_wh
    budget = min(int(n_points), w * h * k / n_total) if n_points > 1.0 else w * h * n_points * k / n_total
    return int(max(0, min(int(budget), w * h)))


def make_plan(
    scales: Sequence[tuple[int, int]],
    crop_wh: tuple[int, int],
    input_wh: tuple[int, int],
    num_classes: int,
    *,
    n_patches: int = -1,
    n_points: float = 100000.0,
    smooth_kernel: int = 5,
    compat: str = "paper",
    patch_batch_size: int = 0,
    dtype: str = "float32",
    conv_algorithm: str = "auto",
) -> MagNetPlan:
    """Builds and validates the plan; raises ValueError naming the offending `config.magnet` field."""
    scales = tuple((int(w), int(h)) for w, h in scales)
    crop_wh = (int(crop_wh[0]), int(crop_wh[1]))
    input_wh = (int(input_wh[0]), int(input_wh[1]))
    check_size(input_wh, "magnet.input_size")
    check_scales(scales, crop_wh)
    if num_classes < 2:
        raise ValueError(f"config.data.num_classes: MagNet needs at least 2 classes (certainty), got {num_classes}")
    check_choice(compat, COMPAT_MODES, "magnet.compat")
    if not isinstance(smooth_kernel, (int, np.integer)) or smooth_kernel < 1:
        raise ValueError(f"config.magnet.smooth_kernel: expected a positive integer, got {smooth_kernel!r}")
    if patch_batch_size < 0:
        raise ValueError(f"config.magnet.patch_batch_size: expected >= 1 (or 0: auto), got {patch_batch_size}")
    check_choice(dtype, DTYPES, "magnet.dtype")
    check_choice(conv_algorithm, CONV_ALGORITHMS, "magnet.conv_algorithm")
    n_points = float(n_points)
    if not math.isfinite(n_points) or n_points <= 0 or (n_points > 1 and not n_points.is_integer()):
        # (the original truncates a fractional count, so 1.5 would silently mean one point)
        raise ValueError(
            f"config.magnet.n_points: expected a fraction in (0, 1] or a whole number of points > 1, got {n_points!r}"
        )
    grids = [patch_grid(s, crop_wh) for s in scales]
    max_n = max(g.shape[0] for g in grids[1:]) if len(scales) > 1 else 0
    if int(n_patches) != n_patches or n_patches < -1 or (len(scales) > 1 and n_patches > max_n):
        raise ValueError(
            f"config.magnet.n_patches: expected -1 (all patches) or 0..{max_n} (the largest patch grid of "
            f"config.magnet.scales), got {n_patches}"
        )
    n_patches = int(n_patches)
    stages = []
    if n_patches != 0:  # the original skips refinement entirely with n_patches == 0
        for i in range(1, len(scales)):
            ratios = grids[i]
            n = ratios.shape[0]
            k = n if n_patches == -1 else min(n_patches, n)
            stages.append(
                StagePlan(
                    index=i,
                    scale_wh=scales[i],
                    ratios=ratios,
                    crops_px=tuple(patch_grid_px(scales[i], crop_wh)),
                    k=k,
                    budget=point_budget(scales[i], n_points, k, n),
                    smooth_kernel=int(smooth_kernel),
                    zero_error_in_mask=(compat == "reference" and n_patches > 0),
                    filter_points_by_mask=(n_patches > 0 or compat == "paper"),
                )
            )
    return MagNetPlan(
        scales=scales,
        crop_wh=crop_wh,
        input_wh=input_wh,
        num_classes=int(num_classes),
        n_patches=n_patches,
        n_points=n_points,
        compat=compat,
        patch_batch_size=int(patch_batch_size),
        stage0_ratios=grids[0],
        stages=tuple(stages),
        dtype=dtype,
        conv_algorithm=conv_algorithm,
    )


def plan_from_config(config) -> MagNetPlan:
    """`make_plan` from `config.magnet.*` and `config.data.num_classes`."""
    from magnet_jax.config import parse_size, parse_sizes  # lazily: the plan itself needs no ml_collections

    m = config.magnet
    return make_plan(
        parse_sizes(m.scales, "magnet.scales"),
        parse_size(m.crop_size, "magnet.crop_size"),
        parse_size(m.input_size, "magnet.input_size"),
        int(config.data.num_classes),
        n_patches=int(m.n_patches),
        n_points=float(m.n_points),
        smooth_kernel=int(m.smooth_kernel),
        compat=str(m.compat),
        patch_batch_size=int(m.patch_batch_size),
        dtype=str(m.get("dtype", "float32")),
        conv_algorithm=str(m.get("conv_algorithm", "auto")),
    )
