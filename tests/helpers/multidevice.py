"""Test code that needs a process of its own: a named function of a module under tests/ (`helpers.children:NAME`)
run in a child Python, with N simulated CPU devices (`--xla_force_host_platform_device_count=N`, fixed when JAX
starts) or as the processes of one `jax.distributed` job; its return value comes back as JSON.

    python tests/helpers/multidevice.py MODULE:FUNCTION [ARG ...]    # what the child runs

The child imports nothing before the function's module (an allocator setting may have to come first), calls
`FUNCTION(*ARGS)` (strings) and prints `RESULT <json>` when it returns something other than None; an exception
or `sys.exit` gives the child's exit status.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
RESULT = "RESULT "


def child_command(target: str, *args: object) -> list[str]:
    """The argv that runs `target` ('module:function') with `args` (as strings) in a child Python."""
    return [sys.executable, str(Path(__file__).resolve()), target, *map(str, args)]


def child_env(devices: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment, the repository and tests/ on PYTHONPATH, JAX on `devices` CPU devices when
    given (any other XLA flag kept), then `extra`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if devices is not None:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def result_of(proc: subprocess.CompletedProcess) -> object:
    """The JSON result of a finished child; asserts it exited 0 (its output's end in the message)."""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    assert lines, f"no {RESULT.strip()} line in the child's output: {proc.stdout[-2000:]}"
    return json.loads(lines[-1][len(RESULT) :])


def run_child(target: str, *args: object, devices: int = 1, cwd: Path | None = None, timeout: int = 600,
              env: dict[str, str] | None = None) -> object:  # fmt: skip
    """Runs `target(*args)` in a child with `devices` CPU devices, or with the whole environment `env` when given
    (e.g. `child_env()` less a variable); returns its JSON result."""
    proc = subprocess.run(child_command(target, *args), env=env or child_env(devices), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return result_of(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(argvs: list[list[str]], cwd: Path | None = None,
                    devices_per_process: int = 1) -> list[subprocess.Popen]:  # fmt: skip
    """Starts `python ARGV` for each of `argvs` as processes 0 .. len-1 of one jax.distributed job (the
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables that
    `magnet_jax.sharding.maybe_initialize_distributed` reads), stdout and stderr piped as text."""
    address = f"localhost:{_free_port()}"
    return [
        subprocess.Popen([sys.executable, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=child_env(devices_per_process, JAX_COORDINATOR_ADDRESS=address,
                                       JAX_NUM_PROCESSES=str(len(argvs)), JAX_PROCESS_ID=str(pid)))  # fmt: skip
        for pid, argv in enumerate(argvs)
    ]


def wait_processes(procs: list[subprocess.Popen], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Waits for every process (killing all of them when one overruns `timeout`); their outputs."""
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def launch_processes(argv: list[str], cwd: Path, processes: int = 2, devices_per_process: int = 1,
                     timeout: int = 300) -> list[subprocess.CompletedProcess]:  # fmt: skip
    """Runs `python ARGV` as every process of one jax.distributed job (`start_processes`) and waits for them."""
    return wait_processes(start_processes([argv] * processes, cwd, devices_per_process), timeout)


def run_distributed(target: str, *args: object, cwd: Path, processes: int = 2, devices_per_process: int = 1,
                    timeout: int = 300) -> list[object]:  # fmt: skip
    """Runs `target(*args)` as every process of one jax.distributed job; returns their JSON results by process."""
    argv = child_command(target, *args)[1:]
    return [result_of(p) for p in launch_processes(argv, cwd, processes, devices_per_process, timeout)]


def _child_main(target: str, args: list[str]) -> None:
    module, _, name = target.partition(":")
    result = getattr(importlib.import_module(module), name)(*args)
    if result is not None:
        print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(TESTS)]
    _child_main(sys.argv[1], sys.argv[2:])
