"""JAX's persistent compilation cache, shared by every entry point (a new process reuses compiled stages).

Folder: `$MAGNET_JAX_CACHE_DIR`, else `~/.cache/magnet_jax/jax_cache`; the variable set to `off` (or
empty) disables it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

CACHE_ENV = "MAGNET_JAX_CACHE_DIR"
_cache_enabled: str | None = None


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turns on JAX's persistent compilation cache (idempotent); returns the folder, or None if disabled.

    Folder: `path`, else `$MAGNET_JAX_CACHE_DIR`, else `~/.cache/magnet_jax/jax_cache`. Setting the
    variable to an empty string or `off` disables it.
    """
    global _cache_enabled
    if path is None:
        env = os.environ.get(CACHE_ENV)
        if env is not None and env.strip().lower() in ("", "off", "none", "0"):
            return None
        path = env or str(Path.home() / ".cache" / "magnet_jax" / "jax_cache")
    path = str(path)
    if _cache_enabled == path:
        return path
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_enabled = path
    return path
