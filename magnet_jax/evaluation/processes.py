"""Evaluation over several processes (`jax.distributed`): which images each runs, and the exchange of
their partial results through the coordinator's key-value store.

Images are dealt round-robin (`process_images`: process `p` of `P` runs images `p, p + P, ...`), so every
image is run exactly once whatever the count. Each process then publishes its partial sums
(`ProcessGroup.exchange`) and reads everyone's, with a timeout that names the processes that did not
answer (one died, or is stuck), so the survivors stop with one line instead of hanging. Before any image,
`check_same_run` refuses processes started with different configs or with workdirs that are not one
shared folder. With one process every call is local and free.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import jax

__all__ = ["ProcessGroup", "ProcessGroupError", "process_images"]

DEFAULT_TIMEOUT_S = 900.0  # an evaluation's images on the slowest process may take this long beyond the others


class ProcessGroupError(RuntimeError):
    """Processes disagree (config, workdir) or one did not answer in time (`peer_lost`); one-line message."""

    def __init__(self, message: str, *, peer_lost: bool = False):
        super().__init__(message)
        self.peer_lost = peer_lost


def process_images(total: int, index: int | None = None, count: int | None = None) -> range:
    """The indices of `range(total)` that process `index` of `count` (default: this one) runs."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return range(index, total, count)


def _client():
    from jax._src import distributed  # the coordinator's key-value store (no public API for it yet)

    client = distributed.global_state.client
    if client is None:
        raise ProcessGroupError("several JAX processes but no jax.distributed client: start them through main.py")
    return client


class ProcessGroup:
    """The processes of this run; `name` keys one exchange (the same on every process, e.g. the split)."""

    _calls: dict[str, int] = {}  # exchanges per name in this process: every process makes them in one order

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.index, self.count = jax.process_index(), jax.process_count()
        self.timeout_s = float(timeout_s)

    def _key(self, name: str) -> str:
        n = ProcessGroup._calls.get(name, 0)
        ProcessGroup._calls[name] = n + 1
        return f"magnet_jax/{name}/{n}"

    def exchange(self, name: str, payload: dict) -> list[dict]:
        """Every process's `payload` (JSON-able), in process order; ProcessGroupError naming the processes
        that did not publish theirs within the timeout."""
        if self.count == 1:
            return [payload]
        client, key = _client(), self._key(name)
        client.key_value_set(f"{key}/{self.index}", json.dumps(payload))
        out, missing = [], []
        for p in range(self.count):
            try:
                out.append(json.loads(client.blocking_key_value_get(f"{key}/{p}", int(self.timeout_s * 1000))))
            except Exception:  # noqa: BLE001 - the store's timeout / a lost coordinator: name the process
                missing.append(p)
        if missing:
            names = ", ".join(str(p) for p in missing)
            raise ProcessGroupError(
                f"process {names} of {self.count} did not report its {name} within {self.timeout_s:.0f} s (it "
                "stopped or is stuck; config.eval.process_timeout_s); nothing was written for the whole split",
                peer_lost=True,
            )
        return out

    def progress(self, name: str, done: int) -> int:
        """Adds `done` images to the run's global count and returns it (the progress bar of process 0)."""
        if self.count == 1:
            return done
        return int(_client().key_value_increment(f"magnet_jax/{name}/progress", done))

    def check_same_run(self, config_flat: dict, workdir: str | os.PathLike) -> None:
        """ProcessGroupError unless every process runs `config_flat` and sees one shared `workdir`."""
        if self.count == 1:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        marker = workdir / f".process{self.index}-{uuid.uuid4().hex[:12]}"
        marker.write_text(str(os.getpid()))
        try:
            everyone = self.exchange("run settings", {"config": config_flat, "marker": marker.name})
            for p, other in enumerate(everyone):
                diff = sorted(k for k in set(other["config"]) | set(config_flat)
                              if other["config"].get(k) != config_flat.get(k))  # fmt: skip
                if diff:
                    shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
                    raise ProcessGroupError(
                        f"process {p} runs another config than process {self.index} (fields differ: {shown}); "
                        "start every process with the same command"
                    )
                if not (workdir / other["marker"]).exists():
                    raise ProcessGroupError(
                        f"--workdir {workdir} is not shared between processes: process {self.index} cannot see "
                        f"process {p}'s files there; give every process one folder on a shared file system"
                    )
            self.exchange("run settings checked", {})  # every marker was seen before any is removed
        finally:
            marker.unlink(missing_ok=True)
