"""The single evaluator of magnet-jax: `--mode=evaluate`, validation during training, the demo's
three-way table and the sweeps all run `Evaluator` and write one results schema (`results.py`).

    evaluator = Evaluator(predictor, dataset, patch_view=True)   # dataset: magnet_jax.data.dataset_spec(config)
    results = evaluator.run(source, max_images=-1)               # source[i] -> {"image", "label", "name"}
    print(format_results(results))
    evaluator.swap_weights(backbone=model)                       # same compiled stages, new weights
"""

from magnet_jax.evaluation.evaluator import EvaluationInterrupted, Evaluator
from magnet_jax.evaluation.results import RESULTS_SCHEMA, format_results, write_json_atomic, write_text_atomic

__all__ = ["RESULTS_SCHEMA", "EvaluationInterrupted", "Evaluator", "format_results", "write_json_atomic",
           "write_text_atomic"]
