"""Child process of tests/test_label_outputs.py: streamed prediction of one TIFF into OUT, over and over
(map files on disk), until the test kills it.

    python tests/helpers/stream_child.py IMAGE.tif OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from magnet_jax.inference.outputs import predict_file  # noqa: E402
from magnet_jax.inference.plan import make_plan  # noqa: E402
from magnet_jax.inference.predictor import MagNetPredictor  # noqa: E402
from magnet_jax.inference.tiled import StreamOptions  # noqa: E402
from magnet_jax.models import build_model  # noqa: E402


def main(image: str, out: str) -> None:
    plan = make_plan([(64, 64), (256, 256)], (64, 64), (64, 64), 3, n_points=0.5)
    options = StreamOptions(mode="on", tile_patches=1, ram_bytes=0)  # every map in a file
    predictor = MagNetPredictor(plan, build_model("small", 3, seed=0), build_model("refinement", 3, seed=1),
                                stream=options)  # fmt: skip
    while True:
        predict_file(predictor, image, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
