"""Training logs: a progress bar, TensorBoard event files, `metrics.jsonl`.

Only process 0 writes. `metrics.jsonl` gets one JSON object per logged event:
`{"run": ..., "step": ..., "kind": "train" | "epoch" | "eval", ...scalars}`, after a `"kind": "run"`
record each time a run starts (or resumes): the units and `magnet_jax.provenance` (git commit, JAX
backend, device kind). Every IoU (a scalar whose name holds `iou`) is a fraction in [0, 1] in the files
(metrics.jsonl, TensorBoard); printed (progress bar, validation lines) it is a percentage with `%`.
"""

from __future__ import annotations

import json
import logging as pylogging
import math
import time
from pathlib import Path
from typing import Any

import jax


class _QuietOrbax:
    """Drops orbax's INFO chatter (and its 'tracked_metric' warning for checkpoints saved without
    validation) from absl's log; warnings and errors pass."""

    def filter(self, record) -> bool:
        path = getattr(record, "pathname", "") or ""
        if "orbax" not in path:
            return True
        if record.levelno >= pylogging.ERROR:
            return True
        return record.levelno >= pylogging.WARNING and "tracked_metric" not in str(record.msg)


_QUIET = _QuietOrbax()
UNITS = "every *iou* value is a fraction in [0, 1]; loss in nats, lr per step"


def shown(key: str, value: Any) -> str:
    """A scalar as printed: IoUs (fractions in the files) as percentages, others with 4 significant digits."""
    if isinstance(value, float) and "iou" in key:
        return f"{100 * value:.2f}%"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def quiet_orbax_logs() -> None:
    """Installs the filter on absl's logger and handler (idempotent)."""
    from absl import logging as absl_logging

    for target in (pylogging.getLogger("absl"), absl_logging.get_absl_handler()):
        if _QUIET not in target.filters:
            target.addFilter(_QUIET)


def is_main_process() -> bool:
    return jax.process_index() == 0


# ---------------------------------------------------------------- writers


class MetricLogger:
    """TensorBoard (tensorboardX) + metrics.jsonl in `workdir`, tagged with a run name."""

    def __init__(self, workdir: str | Path, run: str):
        self.workdir = Path(workdir)
        self.run = run
        self.enabled = is_main_process()
        self._tb = None
        self._jsonl = None
        if self.enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
            from magnet_jax.provenance import provenance

            header = {"run": run, "kind": "run", "time": round(time.time(), 3), "units": UNITS, **provenance()}
            self._jsonl.write(json.dumps(header) + "\n")
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(logdir=str(self.workdir / "tensorboard" / run))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self._tb = None

    def write(self, step: int, kind: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {}
        for key, value in scalars.items():
            value = float(value)
            clean[key] = value if math.isfinite(value) else str(value)
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(f"{kind}/{key}", value, int(step))
        record = {"run": self.run, "kind": kind, "step": int(step), "time": round(time.time(), 3), **clean}
        self._jsonl.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


class Progress:
    """A tqdm progress bar on process 0 (a no-op elsewhere or when disabled)."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True):
        self.bar = None
        if enabled and is_main_process():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, smoothing=0.1)

    def update(self, n: int, postfix: dict[str, Any]) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix({k: shown(k, v) for k, v in postfix.items()}, refresh=False)
        self.bar.update(n)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif is_main_process():
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
