"""Where a result came from: the code's git commit and the JAX backend and device it ran on.

Recorded in every results file (`results.json`, each sweep row, the first record of a run in
`metrics.jsonl`), so numbers compared later name the code and hardware that produced them.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import jax

_REPO = Path(__file__).resolve().parents[1]


@functools.cache
def git_commit() -> str:
    """The commit of the checkout this package runs from (`+dirty` with uncommitted changes), else "unknown"
    (an installed copy, no git)."""
    if not (_REPO / ".git").exists():  # an installed copy: a git repository above it is not this code's
        return "unknown"
    try:
        run = functools.partial(subprocess.run, cwd=_REPO, capture_output=True, text=True, timeout=10, check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if commit and dirty else commit or "unknown"


def provenance() -> dict[str, str | int]:
    """`{"git_commit", "jax_version", "backend", "device_kind", "device_count"}` of this process."""
    devices = jax.devices()
    return {
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else "unknown",
        "device_count": len(devices),
    }
