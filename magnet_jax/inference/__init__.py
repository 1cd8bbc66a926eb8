"""MagNet inference: static plan (`plan`), jit-compiled stages (`stages`, `topk`), the predictor
(`engine.MagNetPredictor`), `--mode=predict` (`predict`), `--mode=evaluate` (`evaluate`) and pictures
(`visualize`). Submodules are imported on demand (the plan is used by config validation without JAX).
"""
