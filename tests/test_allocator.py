"""The allocator setting of the entry points (magnet_jax/allocator.py): it stops the page faults of
repeated large allocations, it can be turned off, and it leaves the pipeline's output bit-identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from magnet_jax.allocator import ALLOCATOR_ENV, allocator_mode

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

_FAULTS = """
import resource, sys
sys.path.insert(0, {repo!r})
from magnet_jax.allocator import configure_allocator
mode = configure_allocator()
import numpy as np
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2**25); del a  # 256 MiB: far above glibc's default mmap threshold
before = faults()
for _ in range(3):
    a = np.ones(2**25); del a
print(mode, faults() - before)
"""


def _env(mode: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ALLOCATOR_ENV, "GLIBC_TUNABLES")}
    if mode is not None:
        env[ALLOCATOR_ENV] = mode
    return env


def _faults(mode: str | None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS.format(repo=str(REPO))], env=_env(mode), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    applied, count = out.stdout.split()
    return applied, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_allocator_keeps_freed_memory_mapped():
    applied, tuned = _faults(None)
    if applied == "unavailable":
        pytest.skip("not glibc: nothing to configure")
    assert applied == "tuned"
    system_mode, system = _faults("system")
    assert system_mode == "system"
    # glibc's defaults unmap each 256 MiB block on free: every new one faults its pages in again
    assert system > 100, system
    assert tuned < 20, tuned


_TRIMMED = """
import sys
sys.path.insert(0, {repo!r})
from magnet_jax.allocator import configure_allocator
mode = configure_allocator({default!r})
import numpy as np
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
a = np.ones(2**28 + 2**26); del a  # 2.5 GiB freed at the top of the heap
print(mode, round(rss_mb()))
"""


def _rss_after_free(default: str) -> tuple[str, float]:
    code = _TRIMMED.format(repo=str(REPO), default=default)
    out = subprocess.run([sys.executable, "-c", code], env=_env(None), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    applied, rss = out.stdout.split()
    return applied, float(rss)


@pytest.mark.slow  # 2.5 GiB faulted in twice; `bounded` is only the test suite's own mode now
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_bounded_mode_returns_a_freed_heap_top_tuned_keeps_it():
    applied, bounded = _rss_after_free("bounded")
    if applied == "unavailable":
        pytest.skip("not glibc: nothing to configure")
    assert applied == "bounded"
    tuned_mode, tuned = _rss_after_free("tuned")
    assert tuned_mode == "tuned"
    assert bounded < 1024, bounded  # trimmed: above 2 GiB free, the top goes back to the OS
    assert tuned > 2048, tuned  # never trimmed: the pages stay mapped for the next forward pass


_GUARD = """
import sys, time
sys.path.insert(0, {repo!r})
from magnet_jax.allocator import configure_allocator, resident_bytes, start_heap_guard
mode = configure_allocator("bounded")  # glibc settings as tuned (holes are never trimmed), without its guard
import numpy as np
hole = np.ones(2**26 + 2**25)  # 768 MiB
pin = np.ones(2**16)  # above it in the heap: freeing `hole` leaves a hole, not a free top
del hole
kept = resident_bytes()
started = start_heap_guard(fraction=0.5, interval_s=0.02, limit_bytes=int({limit_factor} * kept))
time.sleep(0.3)
print(mode, started, kept // 2**20, resident_bytes() // 2**20)
"""


def _guarded_rss(limit_factor: float) -> tuple[str, str, int, int]:
    code = _GUARD.format(repo=str(REPO), limit_factor=limit_factor)
    out = subprocess.run([sys.executable, "-c", code], env=_env(None), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    mode, started, kept, after = out.stdout.split()
    return mode, started, int(kept), int(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_heap_guard_hands_the_freed_heap_back_only_above_its_limit():
    mode, started, kept, after = _guarded_rss(1.0)  # the resident set is at twice the guard's threshold
    if mode == "unavailable":
        pytest.skip("not glibc: nothing to configure")
    assert (mode, started) == ("bounded", "True")
    assert kept > 700, kept  # the freed 768 MiB hole stayed mapped
    assert after < kept - 600, (kept, after)  # the guard returned it
    _, _, kept, after = _guarded_rss(4.0)  # below the threshold: left alone
    assert kept > 700 and after > kept - 50, (kept, after)


def test_main_refuses_a_bad_allocator_mode_in_one_line(tmp_path):
    env = dict(_env("jemalloc"), PYTHONPATH=str(REPO))
    args = [sys.executable, str(REPO / "main.py"), "--config", str(REPO / "configs" / "synthetic.py")]
    out = subprocess.run([*args, "--workdir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "main.py: error: MAGNET_JAX_ALLOCATOR='jemalloc': expected one of tuned, bounded, system"
    ]
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_allocator_mode_values(monkeypatch):
    monkeypatch.setenv(ALLOCATOR_ENV, "")
    assert allocator_mode() == "tuned"
    assert allocator_mode("bounded") == "bounded"
    monkeypatch.setenv(ALLOCATOR_ENV, " System ")
    assert allocator_mode() == "system"
    monkeypatch.setenv(ALLOCATOR_ENV, "tuned")
    assert allocator_mode("bounded") == "tuned"
    monkeypatch.setenv(ALLOCATOR_ENV, "jemalloc")
    with pytest.raises(ValueError, match=r"^MAGNET_JAX_ALLOCATOR='jemalloc': expected one of tuned, bounded, system$"):
        allocator_mode()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_pipeline_bit_identical_with_and_without_the_allocator_setting(parity_dir, samples_dir, tmp_path):
    outputs = {}
    for mode in (None, "system"):
        out = tmp_path / f"{mode}.npz"
        run = subprocess.run(
            [sys.executable, str(TESTS / "helpers" / "pipeline_child.py"), "cityscapes_2stage_fast", str(out)],
            env=_env(mode),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        outputs[mode] = dict(np.load(out))
    assert str(outputs["system"]["mode"]) == "system"
    assert str(outputs[None]["mode"]) in ("tuned", "unavailable")
    keys = sorted(k for k in outputs[None] if k != "mode")
    assert keys == ["stage0_argmax", "stage0_probs", "stage1_argmax", "stage1_probs"]
    for k in keys:
        np.testing.assert_array_equal(outputs[None][k], outputs["system"][k], err_msg=k)
