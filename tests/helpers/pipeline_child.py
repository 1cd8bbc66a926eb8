"""Child process of tests/test_allocator.py: the allocator setting as an entry point applies it, then one
parity pipeline (tests/test_inference_pipelines.py's run_case), its per-stage outputs saved to an .npz.

    python tests/helpers/pipeline_child.py CASE OUT.npz     # MAGNET_JAX_ALLOCATOR decides the allocator
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS.parent), str(TESTS)]

from magnet_jax.allocator import configure_allocator  # noqa: E402

MODE = configure_allocator()  # before JAX allocates, as main.py does

import numpy as np  # noqa: E402
from test_inference_pipelines import run_case  # noqa: E402

from helpers.shared import PARITY, SAMPLES, synth_state_dict_builder  # noqa: E402
from magnet_jax.compile_cache import enable_compilation_cache  # noqa: E402


def main(case: str, out: str) -> None:
    enable_compilation_cache()
    _, result, _ = run_case(PARITY, SAMPLES, synth_state_dict_builder(PARITY), case)
    arrays = {"mode": np.array(MODE)}
    for st in result.stages:
        arrays[f"stage{st.index}_probs"] = np.asarray(st.probs)
        arrays[f"stage{st.index}_argmax"] = st.argmax
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
