"""The training loop shared by every run: steps, checkpoints, logs, validation, NaN checks, exact resume."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from magnet_jax.allocator import release_heap
from magnet_jax.sharding import shard_batch
from magnet_jax.training import metric_log as tlog
from magnet_jax.training.checkpointing import TrainCheckpointer, check_resume_meta
from magnet_jax.training.spec import LoopSpec
from magnet_jax.training.state import TrainState


class TrainingDivergedError(FloatingPointError):
    """The loss (or gradient) became NaN / inf; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the message names the step and the checkpoint a rerun resumes from."""


@contextlib.contextmanager
def _sigint_after():
    """Ctrl-C during a checkpoint save is acted on once the save returns: a save is never cut short (and
    orbax does not log the interrupted wait as an error)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN, None):  # fmt: skip
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda *_: got.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def total_steps(loop: LoopSpec, steps_per_epoch: int) -> int:
    """Steps of a run: `epochs x steps_per_epoch`, cut at `max_steps` when that is > 0."""
    total = loop.epochs * steps_per_epoch
    return min(total, loop.max_steps) if loop.max_steps > 0 else total


def _reason(e: BaseException) -> str:
    """A damaged checkpoint's error on one line, at most 300 characters (its innermost cause: the file)."""
    seen = [e]
    while (nxt := seen[-1].__cause__ or seen[-1].__context__) is not None and nxt not in seen:
        seen.append(nxt)
    root = seen[-1]  # the innermost error names the file; the outer ones describe tensorstore's request
    text = " ".join(f"{type(root).__name__}: {root}".split())
    return text if len(text) <= 300 else text[:297] + "..."


class TrainLoop:
    """Runs `step_fn` over a grain loader with checkpoints, logs, validation and NaN checks.

    `step_fn(state, batch) -> (state, metrics)` with `metrics` holding `loss`, `grad_norm`, `lr` and
    confusion matrices `conf*`; `summarize(host_metrics)` gives the progress-bar numbers of a step,
    `epoch_summary(accumulated)` those of an epoch; `validate(state) -> dict` (with `miou`) runs at the
    end of every `loop.eval_every_epochs`-th epoch and decides the best checkpoint kept.
    `meta` (the run's identity) is stored with every checkpoint; a resume from a checkpoint whose
    identity differs is refused before any step.
    """

    def __init__(
        self,
        *,
        run: str,
        workdir: Path,
        loop: LoopSpec,
        mesh,
        step_fn: Callable,
        state: TrainState,
        loader,
        steps_per_epoch: int,
        total_steps: int,
        meta: dict,
        summarize: Callable[[dict], dict],
        validate: Callable[[TrainState], dict] | None,
        epoch_summary: Callable[[dict], dict] | None = None,
        adapt_batch: Callable[[dict], dict] | None = None,
    ):
        self.run, self.workdir, self.spec, self.mesh = run, workdir, loop, mesh
        self.step_fn, self.state, self.loader = step_fn, state, loader
        self.spe, self.total = steps_per_epoch, total_steps
        self.meta, self.summarize, self.validate = meta, summarize, validate
        self.epoch_summary = epoch_summary
        self.adapt_batch = adapt_batch
        self.ckpt = TrainCheckpointer(workdir / "checkpoints" / run, keep=loop.keep_checkpoints)
        self.logger = tlog.MetricLogger(workdir, run)
        self.log_every = loop.log_every_steps
        self.ckpt_every = loop.checkpoint_every_steps
        self.eval_every = loop.eval_every_epochs

    def _resume(self, it) -> tuple[int, Any]:
        """(step, data iterator) to continue from: the latest checkpoint that can be read. One that cannot
        (a file deleted, zero-filled, cut short) is named in a one-line note and set aside; the one before
        is tried."""
        for step in sorted(self.ckpt.all_steps(), reverse=True):
            check_resume_meta(self.ckpt.read_meta(step), self.meta, self.ckpt.directory)
            try:
                self.state, _ = self.ckpt.restore(step, self.state, it)
            except Exception as e:  # noqa: BLE001 - orbax / tensorstore raise many types for a damaged file
                moved = self.ckpt.set_aside(step)
                print(f"note: {self.run}: checkpoint step {step} in {self.ckpt.directory} cannot be read "
                      f"({_reason(e)}); moved to {moved}, trying the one before", file=sys.stderr, flush=True)
                it = iter(self.loader)  # a failed restore may have moved the iterator
                continue
            logging.info("%s: resumed from step %d (%s)", self.run, step, self.ckpt.directory)
            return int(step), it
        return 0, it

    def _save(self, step: int, it, miou: float | None = None) -> None:
        epoch = step / self.spe
        self.ckpt.save(step, self.state, it, dict(self.meta, epoch=epoch), miou=miou)

    def run_loop(self) -> TrainState:
        start, it = self._resume(iter(self.loader))
        self.logger.resume_at(start)  # rows of steps trained again are written again, not twice
        if start >= self.total:
            logging.info("%s: already trained (%d steps)", self.run, start)
            self.ckpt.close()
            self.logger.close()
            return self.state
        progress = tlog.Progress(self.total, start, self.run, enabled=self.spec.progress)
        # The heap is never trimmed by itself (allocator.py, `tuned`): steps reuse their pages; it is
        # handed back where the workload changes (here, around validation, at the end).
        release_heap()
        epoch_acc: dict[str, Any] = {}
        pending = None  # (step number after update, metrics on device): resolved one step later
        step = start
        last_good = self.ckpt.latest_step()
        t0, n_since = time.time(), 0
        try:
            while step < self.total:
                try:
                    batch = next(it)
                except StopIteration:
                    raise RuntimeError(
                        f"{self.run}: the training data ran out at step {step} of {self.total}; the loader was "
                        "built for another number of epochs or batch size than the schedule"
                    ) from None
                if self.adapt_batch is not None:
                    batch = self.adapt_batch(batch)
                batch = shard_batch(batch, self.mesh)
                self.state, metrics = self.step_fn(self.state, batch)
                step += 1
                if pending is not None:
                    self._consume(pending, progress, epoch_acc, last_good)
                pending = (step, metrics)
                n_since += 1
                epoch_end = step % self.spe == 0 or step == self.total
                do_eval = (
                    self.validate is not None
                    and self.eval_every > 0
                    and epoch_end
                    and (math.ceil(step / self.spe) % self.eval_every == 0 or step == self.total)
                )
                do_ckpt = do_eval or step == self.total or (self.ckpt_every > 0 and step % self.ckpt_every == 0)
                if epoch_end or do_ckpt:
                    self._consume(pending, progress, epoch_acc, last_good)
                    pending = None
                if epoch_end:
                    elapsed = time.time() - t0
                    scalars = self._epoch_scalars(epoch_acc)
                    scalars["samples_per_s"] = n_since * self.spec.batch_size / max(elapsed, 1e-9)
                    self.logger.write(step, "epoch", scalars)
                    epoch_acc.clear()
                    t0, n_since = time.time(), 0
                miou = None
                if do_eval:
                    release_heap()
                    result = self.validate(self.state)
                    release_heap()
                    miou = result.get("miou")
                    self.logger.write(step, "eval", result)
                    line = ", ".join(f"{k} {tlog.shown(k, v)}" for k, v in result.items())
                    progress.write(f"{self.run} step {step}: {line}")
                if do_ckpt:
                    with _sigint_after():
                        self._save(step, it, miou)
                        last_good = step
            if pending is not None:
                self._consume(pending, progress, epoch_acc, last_good)
            full = self.spec.epochs * self.spe
            if self.total < full and jax.process_index() == 0:
                progress.close()  # the bar's line ends first
                print(f"{self.run}: stopped at step {self.total} of {full} (config.train.max_steps); rerun without "
                      "it to continue from there", file=sys.stderr, flush=True)  # fmt: skip
        except KeyboardInterrupt:
            kept = f"the checkpoint of step {last_good} is kept" if last_good else "no checkpoint was written yet"
            raise TrainingInterrupted(f"interrupted at step {step} of {self.total} ({self.run}; {kept}); rerun the "
                                      "same command to resume") from None  # fmt: skip
        finally:
            release_heap()
            progress.close()
            self.ckpt.close()
            self.logger.flush()
            self.logger.close()
        return self.state

    def _consume(self, pending, progress, epoch_acc, last_good) -> None:
        step, metrics = pending
        host = jax.device_get(metrics)
        loss, gnorm = float(host["loss"]), float(host["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            where = (
                f"the last good checkpoint (step {last_good}) is kept in {self.ckpt.directory}"
                if last_good is not None
                else "no checkpoint had been written yet"
            )
            raise TrainingDivergedError(
                f"{self.run}: the loss became {loss} (gradient norm {gnorm}) at step {step}; training stopped and "
                f"{where}. Lower config.train.lr or check the data."
            )
        for key, value in host.items():
            if key.startswith("conf"):
                epoch_acc[key] = epoch_acc.get(key, 0) + np.asarray(value, np.int64)
        epoch_acc["loss_sum"] = epoch_acc.get("loss_sum", 0.0) + loss
        epoch_acc["n"] = epoch_acc.get("n", 0) + 1
        shown = {"loss": loss, "lr": float(host["lr"])}
        shown.update(self.summarize(host))
        progress.update(1, shown)
        if step % self.log_every == 0 or step == self.total:
            self.logger.write(step, "train", dict(shown, grad_norm=gnorm))

    def _epoch_scalars(self, acc: dict) -> dict:
        out = {"loss": acc.get("loss_sum", 0.0) / max(acc.get("n", 1), 1)}
        if self.epoch_summary is not None:
            out.update(self.epoch_summary(acc))
        return out
