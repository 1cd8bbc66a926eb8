#!/usr/bin/env bash
# The GPU check in one go (about 5-7 minutes on one H200): per-image latency, per-stage time and the JAX
# allocator's peak bytes (preallocation off) for deepglobe_full and cityscapes_2stage_full at patch batch 1
# and at the accelerator default (8), then evaluation throughput on 1 vs all local devices with and without
# input overlap. Run from the repository root; one JSON line per measurement, a table per benchmark.
#   bash benchmarks/gpu.sh 2>&1 | tee gpu.log
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # memory_stats() then reports what the run needs, not the pool
export PYTHONUNBUFFERED=1
python - <<'PY'
import jax
print("devices:", jax.devices())
assert jax.default_backend() == "gpu", "benchmarks/gpu.sh needs a GPU (jax.default_backend() is not 'gpu')"
PY
for batch in 1 0; do   # 0: the accelerator default (8 patches per compiled call)
  timeout 240 python benchmarks/inference.py --device gpu --cases deepglobe_full,cityscapes_2stage_full \
    --repeats 3 --compat paper --patch-batch-size "$batch"
done
timeout 150 python benchmarks/inference.py --device gpu --cases deepglobe_full --repeats 3 --compat paper --dtype bfloat16
timeout 150 python benchmarks/eval_throughput.py --case deepglobe --images 8 --devices 1,all --prefetch 0,2
