"""Bad inputs of every kind through `main.py`, as a user meets them: one line, the right exit status,
and nothing the user had is changed (the workdir is hashed before and after where it matters)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.cli import one_line_error as _one_line_error
from helpers.cli import run_main, save_random_weights, weight_flags
from helpers.cli import tree_hash as _tree_hash
from helpers.multidevice import child_command, child_env
from helpers.shared import REPO

TINY = str(REPO / "tests" / "configs" / "tiny.py")


@pytest.fixture(scope="session")  # not module: a worker that runs other modules in between would train again
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(workdir, data root) of a tiny backbone run stopped at step 2 of 8."""
    root = tmp_path_factory.mktemp("errors")
    work, data = root / "work", root / "data"
    proc = run_main(["--config", TINY, "--workdir", str(work), f"--config.data.root={data}",
                     "--config.train.max_steps=2"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, data


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--config.train.lr=0.02",
         "run 'backbone' has checkpoints (step 2) written with other settings (train.lr: 0.01 -> 0.02)"),
        ("--config.train.epochs=6", "(train.epochs: 4 -> 6)"),
        ("--config.train.batch_size=4", "(train.batch_size: 2 -> 4)"),
        ("--config.seed=4", "produced with another config (seed: 3 -> 4)"),
        ("--config.data.synthetic.size=128", "(data.synthetic.size: 64 -> 128)"),
        ("--config.model.backbone=fpn", "(model.backbone: 'small' -> 'fpn')"),
    ],
)  # fmt: skip
@pytest.mark.xdist_group("errors_trained")  # with pytest -n: one tiny training run, not one per worker
def test_resume_or_rerun_with_another_config_is_refused(trained, flag, expected):
    work, data = trained
    before = _tree_hash(work)
    proc = run_main(["--config", TINY, "--workdir", str(work), f"--config.data.root={data}", flag])
    assert expected in _one_line_error(proc)
    assert _tree_hash(work) == before  # config.json, checkpoints, data: all untouched


@pytest.mark.xdist_group("errors_trained")
def test_allowed_changes_resume(trained, tmp_path):
    """Stopping later and logging differently are not a new config: the run resumes."""
    work, data = tmp_path / "work", trained[1]
    shutil.copytree(trained[0], work)  # the shared run stays at step 2 for the other tests, in any order
    proc = run_main(["--config", TINY, "--workdir", str(work), f"--config.data.root={data}",
                     "--config.train.max_steps=3", "--config.train.log_every_steps=2"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 2" in proc.stderr


def test_a_record_older_than_a_field_reads_as_what_it_was_produced_with():
    """Records written before `magnet.conv_algorithm` existed were computed with direct convolutions:
    only that value continues them."""
    from magnet_jax.commands.workdir import differences

    old = {"seed": 3, "magnet.scales": "64-64,128-128"}
    assert differences(old, {**old, "magnet.conv_algorithm": "direct"}) == []
    assert differences(old, {**old, "magnet.conv_algorithm": "auto"}) == ["magnet.conv_algorithm: 'direct' -> 'auto'"]
    assert differences(old, {"seed": 3}) == ["magnet.scales: '64-64,128-128' -> '<absent>'"]


def test_users_own_config_json_is_never_overwritten(tmp_path):
    (tmp_path / "config.json").write_text('{"my": "notes"}\n')
    proc = run_main(["--config", TINY, "--workdir", str(tmp_path), f"--config.data.root={tmp_path / 'd'}"])
    assert "holds a config.json that magnet-jax did not write" in _one_line_error(proc)
    assert (tmp_path / "config.json").read_text() == '{"my": "notes"}\n'
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--config.model.backbone=resnet101"],
         "config.model.backbone: unknown model 'resnet101'; expected a backbone: fpn"),
        (["--config.model.backbone=refinement"],
         "config.model.backbone: 'refinement' is a refiner; expected a backbone"),
        (["--config.model.refiner=fpn"], "config.model.refiner: 'fpn' is a backbone; expected a refiner: refinement"),
        (["--config.magnet.npoints=3"], 'Did you mean "n_points" instead of "npoints"?'),
        (["--config.data.name=custom", "--config.data.num_classes=300"],
         "config.data.num_classes is 300: expected 1..255"),
        (["--image=x.jpg"], "--image is only used with --mode=predict"),
        (["--config.magnet.n_points=0"], "config.magnet.n_points: expected > 0"),
        (["--config.magnet.conv_algorithm=fft"],
         "config.magnet.conv_algorithm: expected 'auto', 'direct' or 'winograd', got 'fft'"),
    ],
)  # fmt: skip
def test_bad_fields_fail_before_any_work(tmp_path, flags, expected):
    work = tmp_path / "work"
    proc = run_main(["--config", TINY, "--workdir", str(work), *flags])
    assert expected in _one_line_error(proc)
    assert not work.exists()  # nothing written, nothing generated


def test_workdir_that_is_a_file_or_read_only(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = run_main(["--config", TINY, "--workdir", str(afile)])
    assert f"--workdir {afile}: exists and is not a folder" in _one_line_error(proc)
    if os.geteuid() == 0:  # root writes through permission bits: use a folder of a read-only filesystem
        ro = Path("/sys/kernel")
        if not ro.is_dir() or _writable(ro):
            pytest.skip("no read-only folder available to root here")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    proc = run_main(["--config", TINY, "--workdir", str(ro), "--mode=evaluate"])
    assert f"--workdir {ro}: not writable" in _one_line_error(proc)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False


def test_verbose_shows_the_traceback(tmp_path):
    proc = run_main(["--config", TINY, "--workdir", str(tmp_path / "w"), "--config.model.backbone=resnet101",
                     "--verbose"])  # fmt: skip
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_help_lists_the_modes_and_the_schema():
    proc = run_main(["--help"])
    assert proc.returncode == 0
    for text in ("magnet_jax/config.py", "train ", "evaluate ", "predict ", "check ", "sweep "):
        assert text in proc.stdout


def _deepglobe_list(root: Path, bad_label_at: int | None = None, n: int = 3) -> Path:
    colors = [(0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        label = np.zeros((64, 64, 3), np.uint8)
        label[:, :32] = colors[1 + i]
        cv2.imwrite(str(root / f"{i}_sat.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(root / f"{i}_mask.png"), label[:, :, ::-1])
        if i == bad_label_at:
            data = (root / f"{i}_mask.png").read_bytes()
            (root / f"{i}_mask.png").write_bytes(data[: len(data) // 2])
        lines.append(f"{i}_sat.jpg\t{i}_mask.png")
    (root / "test.txt").write_text("\n".join(lines) + "\n")
    return root / "test.txt"


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    return save_random_weights(tmp_path_factory.mktemp("weights"), "small", 7)


def _dg_flags(root: Path, weights: Path) -> list[str]:
    return ["--config", str(REPO / "configs" / "deepglobe.py"), f"--config.data.root={root}",
            f"--config.data.test_list={root / 'test.txt'}", "--config.model.backbone=small",
            *weight_flags(weights),
            "--config.magnet.scales=32-32,64-64", "--config.magnet.crop_size=32-32",
            "--config.magnet.input_size=32-32"]  # fmt: skip


def test_bad_label_mid_evaluation_keeps_partial_results(tmp_path, small_weights):
    _deepglobe_list(tmp_path, bad_label_at=1)
    work = tmp_path / "work"
    proc = run_main([*_dg_flags(tmp_path, small_weights), "--mode=evaluate", "--workdir", str(work)])
    line = _one_line_error(proc, status=1)
    assert "evaluation stopped at sample 1 of 3" in line and "1_mask.png" in line
    partial = json.loads((work / "results.json").read_text())
    assert partial["partial"] is True and partial["num_images"] == 1 and "1_mask.png" in partial["error"]


def test_check_mode_reports_every_bad_sample(tmp_path, small_weights):
    _deepglobe_list(tmp_path, bad_label_at=2)
    work = tmp_path / "work"
    proc = run_main([*_dg_flags(tmp_path, small_weights), "--mode=check", "--workdir", str(work)])
    assert "1 of 3 samples failed the check; 2 split(s) could not be read (train, val)" in _one_line_error(proc, 1)
    report = json.loads((work / "check_report.json").read_text())
    assert report["splits"]["test"] == {"checked": 3, "failed": 1}
    assert report["failures"][0]["index"] == 2 and "2_mask.png" in report["failures"][0]["problem"]


def test_truncated_jpeg_in_a_dataset_names_the_file(tmp_path):
    from magnet_jax.data import DataError
    from magnet_jax.data.sources import read_image

    good = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", good)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"cut.jpg: truncated JPEG"):
        read_image(str(tmp_path / "cut.jpg"))
    (tmp_path / "ok.jpg").write_bytes(data)
    assert read_image(str(tmp_path / "ok.jpg")).shape == (40, 40, 3)


def test_kill_during_results_write_leaves_the_old_file(tmp_path):
    from magnet_jax.evaluation import write_json_atomic

    path = tmp_path / "results.json"
    write_json_atomic(path, {"old": True})
    for delay in (0.05, 0.4, 1.1):
        proc = subprocess.Popen(child_command("helpers.children:write_results_forever", path), env=child_env(),
                                stdout=subprocess.PIPE)  # fmt: skip
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        content = json.loads(path.read_text())  # always complete JSON: the old or a whole new one
        assert content == {"old": True} or len(content["rows"]) == 2_000_000
