"""Where the tests find the repository and the original MagNet's ground truth (parity fixtures, sample images).

`MAGNET_SHARED` names the shared folder; by default it sits next to the repository (`../shared`).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MAGNET_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "parity"
SAMPLES = SHARED / "samples"


def synth_state_dict_builder(parity: Path = PARITY):
    """synth_state_dict(manifest_name, salt='') -> {torch key: array}: the original's weights, synthesised from
    the parity folder's manifests and BatchNorm statistics (its `synth_weights.py`)."""
    import json
    import sys

    import numpy as np

    if str(parity) not in sys.path:
        sys.path.insert(0, str(parity))
    from synth_weights import synth_state_dict as synth

    def build(name: str, salt: str = "") -> dict[str, np.ndarray]:
        manifest = json.loads((parity / "manifests" / f"{name}.json").read_text())
        return synth(manifest, salt, dict(np.load(parity / "bn_stats" / f"{name}.npz")))

    return build
