"""Training logs: a progress bar, TensorBoard event files, `metrics.jsonl`.

Only process 0 writes. `metrics.jsonl` gets one JSON object per logged event:
`{"run": ..., "step": ..., "kind": "train" | "epoch" | "eval", ...scalars}`, after a `"kind": "run"`
record each time a run starts (or resumes): the units and `magnet_jax.provenance` (git commit, JAX
backend, device kind). Every IoU (a scalar whose name holds `iou`) is a fraction in [0, 1] in the files
(metrics.jsonl, TensorBoard); printed (progress bar, validation lines) it is a percentage with `%`.
A run that resumes from step N first drops its rows after step N (steps it trains again), so no
step is listed twice.
"""

from __future__ import annotations

import errno
import json
import logging as pylogging
import math
import os
import time
from pathlib import Path
from typing import Any

import jax

# A full disk (or a file-size limit, a read-only filesystem) during an asynchronous save: orbax logs it with
# a traceback from each of its threads; main.py reports it once, as one line naming the file.
_DISK_TEXTS = tuple(os.strerror(n) for n in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS))


class _QuietOrbax:
    """Drops orbax's INFO chatter (and its 'tracked_metric' warning for checkpoints saved without
    validation) from absl's log, and its errors for a full disk (reported once by main.py); other
    warnings and errors pass."""

    def filter(self, record) -> bool:
        path = getattr(record, "pathname", "") or ""
        if "orbax" not in path:
            return True
        if record.levelno >= pylogging.ERROR:
            exc = record.exc_info[1] if record.exc_info else None
            text = f"{record.getMessage()} {exc or ''}"
            return not any(t in text for t in _DISK_TEXTS)
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
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(logdir=str(self.workdir / "tensorboard" / run))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self._tb = None

    def resume_at(self, step: int) -> None:
        """Drops this run's rows after `step` from metrics.jsonl (rewritten atomically, only if there are any)."""
        path = self.workdir / "metrics.jsonl"
        if not self.enabled or not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if not _after(line, self.run, step)]
        if len(kept) != len(lines):
            from magnet_jax.evaluation import write_text_atomic

            write_text_atomic(path, "".join(kept))

    def write(self, step: int, kind: str, scalars: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._jsonl is None:  # opened at the first row: resume_at may rewrite the file before
            from magnet_jax.provenance import provenance

            self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
            header = {"run": self.run, "kind": "run", "time": round(time.time(), 3), "units": UNITS, **provenance()}
            self._jsonl.write(json.dumps(header) + "\n")
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


def _after(line: str, run: str, step: int) -> bool:
    try:
        row = json.loads(line)
    except ValueError:  # a row cut short by a kill: dropped with the steps trained again
        return True
    return isinstance(row, dict) and row.get("run") == run and int(row.get("step", 0)) > step


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
