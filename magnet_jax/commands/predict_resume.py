"""Reruns of `--mode=predict` skip the images a previous run completed with the same config.

Each image's folder gets `.magnet_complete.json` last, after every output of the image was written (a
run killed mid-image leaves none, so the image is predicted again). It records the image (path, size,
modification time), the config fields that change the outputs, and the image's summary entry. A rerun
skips an image whose marker matches all three and says so; a changed image or config predicts it again
(and names the first differing field). The marker is removed before an image is predicted, so a folder
never claims to be complete while its files are being rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from magnet_jax.commands.workdir import flat_config
from magnet_jax.evaluation import write_json_atomic

__all__ = ["MARKER", "Completion"]

MARKER = ".magnet_complete.json"
# fields that cannot change an image's outputs (speed, memory, progress display, training / evaluation)
IGNORED = ("data.num_workers", "magnet.patch_batch_size", "magnet.tile_patches", "magnet.memory_budget_mb",
           "predict.progress")  # fmt: skip
IGNORED_PREFIXES = ("train.", "eval.")


def _relevant(config) -> dict[str, Any]:
    flat = json.loads(json.dumps(flat_config(config), default=str))
    return {k: v for k, v in flat.items() if k not in IGNORED and not k.startswith(IGNORED_PREFIXES)}


def _image_id(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"image": os.path.abspath(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


class Completion:
    """Completion markers of one predict run's config (see the module docstring)."""

    def __init__(self, config):
        self.config = _relevant(config)

    def check(self, image: str, out_dir: str) -> tuple[dict | None, str]:
        """`(the earlier summary entry, "")` when `out_dir` holds a matching marker, else `(None, why not)`."""
        path = os.path.join(out_dir, MARKER)
        if not os.path.isfile(path):
            return None, ""
        try:
            with open(path) as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return None, "its completion record is unreadable"
        if marker.get("source") != _image_id(image):
            return None, "the image changed"
        old = marker.get("config", {})
        for key in sorted(set(old) | set(self.config)):
            if old.get(key, "<absent>") != self.config.get(key, "<absent>"):
                was, now = old.get(key, "<absent>"), self.config.get(key, "<absent>")
                return None, f"the config changed ({key}: {was!r} -> {now!r})"
        return marker.get("entry"), ""

    @staticmethod
    def start(out_dir: str) -> None:
        """Before writing an image's outputs: its folder no longer counts as complete."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, MARKER))

    def finish(self, image: str, out_dir: str, entry: dict) -> None:
        """After every output of the image: the marker, written atomically."""
        data = {"source": _image_id(image), "config": self.config, "entry": entry}
        write_json_atomic(os.path.join(out_dir, MARKER), json.loads(json.dumps(data, default=str)))
