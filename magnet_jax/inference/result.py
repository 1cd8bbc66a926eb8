"""The one result type of MagNet prediction, whole-image or tiled: per-stage maps, points and timings."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from magnet_jax.inference.host_maps import HostMap

__all__ = ["MagNetResult", "StageResult"]


@dataclasses.dataclass
class StageResult:
    """One stage's output, whole-image (device / NumPy arrays) or tiled (`HostMap`s read by region)."""

    index: int
    size_hw: tuple[int, int]  # resolution of this stage's maps
    probs: jax.Array | HostMap | None  # [h, w, C] P after this stage (None when not kept)
    argmax: np.ndarray | HostMap | None  # [h, w] uint8 (tiled: last stage, or every stage with keep_labels)
    # 1 - certainty of the stage's input, and the smoothed error score the points came from
    # (whole image: [h, w]; tiled: [ih, iw], the input-size samples)
    uncertainty: jax.Array | np.ndarray | None = None
    error: jax.Array | np.ndarray | None = None
    selected: np.ndarray | None = None  # [k] patch indices refined, in selection order (tiled, all patches: None)
    points: int = 0  # pixels written with refined values
    refined: jax.Array | None = None  # [h, w] bool, the pixels written (whole image only)
    seconds: float = 0.0
    preview: np.ndarray | None = None  # argmax sampled at the preview size (tiled)
    tile_patches: int = 0  # tiled: the tile side in patches this stage ran with


@dataclasses.dataclass
class MagNetResult:
    stages: list[StageResult]
    final_probs: jax.Array | HostMap | None  # P at the last stage's resolution
    seconds: float = 0.0  # wall time of predict() excluding preprocessing
    preprocess_seconds: float = 0.0
    patches: list[jax.Array] | None = None  # per stage, the device patches [N_i, ih, iw, 3] (keep_patches=True)
    tiled: bool = False

    @property
    def timings(self) -> dict[str, float]:
        out = {"preprocess": self.preprocess_seconds}
        out.update({f"stage{s.index}": s.seconds for s in self.stages})
        out["total"] = self.seconds
        return out

    @property
    def labels(self) -> np.ndarray | HostMap:
        """The prediction: the last stage's argmax at its resolution."""
        return self.stages[-1].argmax

    def close(self) -> None:
        """Removes a tiled result's map files (nothing to do for a whole-image result)."""
        for s in self.stages:
            for m in (s.probs, s.argmax):
                if isinstance(m, HostMap):
                    m.close()
