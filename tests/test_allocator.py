"""The allocator setting of the entry points (magnet_jax/allocator.py): it stops the page faults of
repeated large allocations, it can be turned off, and it leaves the pipeline's output bit-identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.multidevice import child_env, run_child

from magnet_jax.allocator import ALLOCATOR_ENV, allocator_mode

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _env(mode: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ALLOCATOR_ENV, "GLIBC_TUNABLES")}
    if mode is not None:
        env[ALLOCATOR_ENV] = mode
    return env


def _child_env(mode: str | None) -> dict[str, str]:
    """The helper's child environment without this process's allocator settings (the suite's `bounded`, also in
    GLIBC_TUNABLES), `mode` as `$MAGNET_JAX_ALLOCATOR` when given."""
    env = {k: v for k, v in child_env().items() if k not in (ALLOCATOR_ENV, "GLIBC_TUNABLES")}
    if mode is not None:
        env[ALLOCATOR_ENV] = mode
    return env


def _faults(mode: str | None) -> tuple[str, int]:
    applied, count = run_child("helpers.children:allocator_faults", env=_child_env(mode))
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


def _rss_after_free(default: str) -> tuple[str, float]:
    applied, rss = run_child("helpers.children:allocator_rss_after_free", default, env=_child_env(None))
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


def _guarded_rss(limit_factor: float) -> tuple[str, bool, int, int]:
    mode, started, kept, after = run_child("helpers.children:allocator_guarded_rss", limit_factor,
                                           env=_child_env(None))  # fmt: skip
    return mode, started, int(kept), int(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_heap_guard_hands_the_freed_heap_back_only_above_its_limit():
    mode, started, kept, after = _guarded_rss(1.0)  # the resident set is at twice the guard's threshold
    if mode == "unavailable":
        pytest.skip("not glibc: nothing to configure")
    assert (mode, started) == ("bounded", True)
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
