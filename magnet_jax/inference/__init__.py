"""MagNet inference: the static plan (`plan`), jit-compiled stages (`stages`, `select`, `topk`), the
predictor (`engine.MagNetPredictor`), its compute (`cost`), one image's outputs (`predict`), figures
(`figures`, `visualize`) and streamed large-image prediction (`streamed`). Submodules are imported on
demand. Evaluation over a dataset is `magnet_jax.evaluation`; the commands are `magnet_jax.commands`.
"""
