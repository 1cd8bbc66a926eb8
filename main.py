"""magnet-jax: MagNet (Progressive Semantic Segmentation, CVPR 2021) in JAX.

    python main.py --config CONFIG[:VARIANT] --workdir DIR [--mode MODE] [--config.FIELD=VALUE ...]

Modes, one example each:
  train     (default) python main.py --config configs/synthetic.py --workdir runs/synthetic
  evaluate  python main.py --config configs/cityscapes.py --mode=evaluate --workdir runs/cs
              --config.checkpoint.backbone=cs_hrnet.pth --config.checkpoint.refiners=r512.pth,r1024.pth,r2048.pth
  predict   python main.py --config configs/deepglobe.py --mode=predict --image 'photos/*.jpg' --workdir out
              --config.checkpoint.backbone=dg_fpn.pth --config.checkpoint.refiners=dg_refinement.pth
  check     python main.py --config configs/deepglobe.py --mode=check --workdir runs/check
              (reads and validates every sample of the splits, writes check_report.json)
  sweep     python main.py --config configs/sweeps/synthetic.py --mode=sweep --workdir runs/sweep
              --config.checkpoint.backbone=runs/synthetic/weights/backbone --config.checkpoint.refiners=...

Every config field can be overridden (`--config.magnet.n_points=0.5`); the schema, with a comment per
field, is magnet_jax/config.py. Configs take variants: `configs/synthetic.py:smoke`,
`configs/deepglobe.py:fast`. A user's mistake (config, data, checkpoint, workdir) is one line and exit
status 2; --verbose (or MAGNET_JAX_VERBOSE=1) shows the traceback.
"""

from __future__ import annotations

import sys

from magnet_jax.allocator import configure_allocator

# Before JAX allocates: keeps XLA's CPU buffers mapped, so repeated programs (steps, images) do not
# page-fault their memory in again; the training loop hands the heap back where its workload changes
# (magnet_jax/allocator.py; MAGNET_JAX_ALLOCATOR=tuned|bounded|system overrides).
try:
    configure_allocator()
except ValueError as e:  # a bad MAGNET_JAX_ALLOCATOR: one line, as every user mistake
    print(f"main.py: error: {e}", file=sys.stderr)
    sys.exit(2)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from magnet_jax.commands.cli import flags_parser, guarded, image_args, safe_console  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, logs and outputs.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate", "predict", "check", "sweep"], "What to do.")
_IMAGE = flags.DEFINE_multi_string(
    "image", [], "predict: image files, globs or folders (repeat the flag, or separate them by commas; a path "
    "that exists is never split)."
)
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of every error.")
flags.mark_flags_as_required(["config", "workdir"])
safe_console()


def _run(argv: list[str]) -> None:
    mode, config = _MODE.value, _CONFIG.value
    if len(argv) > 1:
        raise ValueError(f"--: unexpected arguments {' '.join(argv[1:])}")
    if _IMAGE.value and mode != "predict":
        raise ValueError(f"--image is only used with --mode=predict (got --mode={mode})")
    if mode == "predict" and not _IMAGE.value:
        raise ValueError("--image: --mode=predict needs image files, globs or folders")
    from magnet_jax.commands.checks import check_config
    from magnet_jax.commands.errors import note_workdir
    from magnet_jax.commands.workdir import lock_workdir, prepare_workdir

    checked = check_config(config, mode)  # once: the command takes these specs and does not check again
    workdir = prepare_workdir(_WORKDIR.value, utf8_only=mode == "train")
    if mode == "evaluate":  # a training workdir's results.json and pictures/ are the training's
        from magnet_jax.commands.workdir import check_evaluation_workdir

        check_evaluation_workdir(workdir)
    lock_workdir(workdir)  # one run per workdir, held until this process exits
    note_workdir(workdir)  # named by a failed write that does not say which file it was
    if mode == "train":  # the workdir's record and checkpoints, before any work (train writes nothing before)
        from magnet_jax.commands.train import preflight
        from magnet_jax.commands.workdir import check_record

        check_record(config, workdir)
        preflight(config, workdir, checked)
    return workdir, checked


def main(argv: list[str]) -> None:
    workdir, checked = guarded(lambda: _run(argv), before_work=True, argv=argv)
    mode, config = _MODE.value, _CONFIG.value
    logging.info("mode %s, workdir %s", mode, workdir)
    from magnet_jax.training.metric_log import quiet_orbax_logs

    quiet_orbax_logs()  # orbax's INFO lines on every weights load (some of 500+ characters): warnings pass
    if mode == "train":
        from magnet_jax.commands.train import run_train

        def command(c, w):
            return run_train(c, w, checked)
    elif mode == "evaluate":
        from magnet_jax.commands.evaluate import run_evaluate

        def command(c, w):
            return run_evaluate(c, w, checked)
    elif mode == "check":
        from magnet_jax.commands.check_data import run_check

        def command(c, w):
            return run_check(c, w, checked)
    elif mode == "sweep":  # each sweep point is a config of its own, checked by the sweep
        from magnet_jax.commands.sweep import run_sweep as command
    else:
        from magnet_jax.commands.predict import run_predict

        def command(c, w):
            return run_predict(c, str(w), image_args(_IMAGE.value), checked)

    guarded(lambda: command(config, workdir), before_work=False, argv=argv)


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
