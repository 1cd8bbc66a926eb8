"""magnet-jax entry point: train, evaluate or predict, configured by an ml-collections file.

    python main.py --config configs/synthetic.py --workdir runs/synthetic
    python main.py --config configs/cityscapes.py --mode=evaluate --workdir runs/cs \
        --config.checkpoint.backbone=checkpoints/cityscapes_hrnet.pth
    python main.py --config configs/deepglobe.py --mode=predict --image 'images/*.jpg' --workdir out
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from magnet_jax.config import validate_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict"], "What to do.")
_IMAGE = flags.DEFINE_list("image", [], "predict: image files, globs or folders (comma-separated).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    validate_config(config)
    logging.info("mode %s, workdir %s", _MODE.value, _WORKDIR.value)
    if _MODE.value == "train":
        from magnet_jax.training.run import run_train

        run_train(config, _WORKDIR.value)
    elif _MODE.value == "evaluate":
        from magnet_jax.inference.evaluate import run_evaluate

        run_evaluate(config, _WORKDIR.value)
    else:
        if not _IMAGE.value:
            raise app.UsageError("--mode=predict needs --image (files, globs or folders)")
        from magnet_jax.inference.predict import run_predict

        run_predict(config, _WORKDIR.value, _IMAGE.value)


if __name__ == "__main__":
    app.run(main)
