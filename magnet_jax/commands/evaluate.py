"""`main.py --mode=evaluate`: MagNet on `config.data.eval_split` through the single evaluator.

    python main.py --config configs/cityscapes.py --mode=evaluate --workdir runs/eval \
        --config.checkpoint.backbone=... --config.checkpoint.refiners=...

Prints the plan, a progress bar with the running coarse and MagNet mIoU, then the per-class table,
and writes `WORKDIR/results.json` (`magnet_jax/evaluation/results.py`: `miou.coarse`, `miou.stages`,
`miou.refined`, `iou`, `compute` with GFLOPs per image, `seconds_per_image`, `peak_memory_mb`, and the
protocol: dataset, split, its list file's checksum, classes averaged, overall metric). A sample that
fails to load stops the evaluation with one line naming it, after writing the images before it as
`results.json` marked `"partial": true`. A workdir holding a training run is refused before any work
(`commands/workdir.py: check_evaluation_workdir`): evaluate into another `--workdir`.
"""

from __future__ import annotations

from pathlib import Path

import jax
from absl import logging

from magnet_jax.allocator import release_heap
from magnet_jax.commands.workdir import flat_config
from magnet_jax.evaluation import EvaluationInterrupted, Evaluator, format_results, write_json_atomic
from magnet_jax.evaluation.evaluator import save_evaluation_picture
from magnet_jax.evaluation.processes import ProcessGroup
from magnet_jax.inference.predictor import MagNetPredictor
from magnet_jax.provenance import provenance


def build_predictor(config, *, backbone: str | None = None, refiners: list[str] | None = None) -> MagNetPredictor:
    """The predictor of `config` with weights from `config.checkpoint.*`, or the given paths."""
    from magnet_jax.inference.plan import plan_from_config
    from magnet_jax.weights import load_model_weights, load_refiners

    if backbone is None and refiners is None:
        return MagNetPredictor.from_config(config, after_tile=release_heap)
    plan = plan_from_config(config)
    n = int(config.data.num_classes)
    bb = load_model_weights(backbone or str(config.checkpoint.backbone), str(config.model.backbone), n)
    refs = load_refiners(refiners or [], n, plan.num_refiners_expected, refiner=str(config.model.refiner))
    from magnet_jax.inference.tiled import StreamOptions

    stream = StreamOptions.from_config(config, after_tile=release_heap)
    return MagNetPredictor(plan, bb, refs if plan.stages else [], stream=stream)


def evaluate_to_workdir(
    config,
    workdir: str | Path,
    *,
    predictor: MagNetPredictor | None = None,
    backbone: str | None = None,
    refiners: list[str] | None = None,
    patch_view: bool = False,
    write: bool = True,
    timed: bool = True,
    pictures: bool = True,
) -> dict:
    """Evaluates `config` on its eval split; returns the results (and writes `results.json` when `write`)."""
    from magnet_jax.compile_cache import enable_compilation_cache
    from magnet_jax.data import build_source, dataset_spec
    from magnet_jax.inference.cost import gflops_per_image

    enable_compilation_cache()
    workdir = Path(workdir)
    dataset = dataset_spec(config)
    split = str(config.data.eval_split)
    source = build_source(config, split, workdir=str(workdir))
    predictor = predictor or build_predictor(config, backbone=backbone, refiners=refiners)
    print(predictor.plan.describe(), flush=True)
    evaluator = Evaluator(predictor, dataset, patch_view=patch_view)
    picture_dir = workdir / "pictures"
    wanted = pictures and config.eval.save_pictures and jax.process_index() == 0
    n_pictures = int(config.eval.num_pictures) if wanted else 0

    def on_image(i: int, sample: dict, preds: dict) -> None:
        if i < n_pictures:
            picture_dir.mkdir(parents=True, exist_ok=True)
            save_evaluation_picture(picture_dir / f"{sample['name']}.png", sample, preds, dataset)

    context = {
        "dataset": dataset.name,
        "split": split,
        "protocol": dataset.protocol(split, workdir=str(workdir)),
        "checkpoints": {"backbone": backbone or str(config.checkpoint.backbone),
                        "refiners": refiners if refiners is not None else str(config.checkpoint.refiners)},
        "pictures": str(picture_dir) if n_pictures else "",
        "config": flat_config(config),  # the config these numbers were produced with
        "provenance": provenance(),  # ... the code (git commit) and the JAX backend / device
    }  # fmt: skip
    try:
        results = evaluator.run(source, max_images=int(config.eval.max_images), warmup=timed, on_image=on_image,
                                prefetch=int(config.eval.prefetch), batch_images=int(config.eval.batch_images),
                                group=ProcessGroup(float(config.eval.process_timeout_s)))  # fmt: skip
    except EvaluationInterrupted as e:
        e.results.update(context)
        if write and jax.process_index() == 0:
            write_json_atomic(workdir / "results.json", e.results)
            logging.error("partial results of %d images written to %s", e.results["num_images"], workdir)
        raise
    results.update(context)
    results["compute"]["gflops"] = round(gflops_per_image(predictor), 2)
    if write and jax.process_index() == 0:
        write_json_atomic(workdir / "results.json", results)
        print(format_results(results), flush=True)
    return results


def run_evaluate(config, workdir: str | Path) -> dict:
    """`main.py --mode=evaluate` (the config already checked). Under several processes (`jax.distributed`)
    each evaluates its share of the split; every process must run the same config in one shared workdir."""
    from magnet_jax.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()
    ProcessGroup(float(config.eval.process_timeout_s)).check_same_run(flat_config(config), workdir)
    return evaluate_to_workdir(config, workdir)
