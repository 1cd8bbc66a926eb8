"""What a user hands `main.py` that is not what it expects, through `main.py` as they run it: a broken
`--config` file, image names that are not UTF-8, commas and folders among `--image`, a sweep.jsonl cut
short, a workdir another run holds. One line and exit status 2 where it is refused; otherwise every
valid input is still used."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.cli import one_line_error as _one_line_error
from helpers.cli import run_main, save_random_weights, tree_hash
from helpers.cli import weight_flags as _weights
from helpers.shared import REPO
from helpers.small_disk import KINDS, MESSAGES, run_main_in, small_disk

TINY = str(REPO / "tests" / "configs" / "tiny.py")
SWEEP = str(REPO / "tests" / "configs" / "tiny_sweep.py")


@pytest.mark.parametrize(
    ("text", "variant", "expected"),
    [
        (None, "", "configs/synthetc.py: no such file; did you mean configs/synthetic.py?"),
        ("def get_config(:\n", "", "c.py: syntax error at line 1: invalid syntax"),
        ("x = 1\n", "", "c.py: it defines no get_config(); expected a function returning an ml_collections ConfigDict"),
        ("def get_config():\n    return {'seed': 1}\n", "",
         "c.py: get_config() returned dict; expected an ml_collections ConfigDict"),
        ("import no_such_module_here\n", "", "c.py: running it failed (line 1): ModuleNotFoundError"),
        ("def get_config():\n    return missing\n", "", "c.py: get_config failed (line 2): NameError"),
        ("from magnet_jax.config import default_config\n\ndef get_config():\n    return default_config()\n", ":x",
         "c.py:x: this config takes no variant (':x')"),
    ],
)  # fmt: skip
def test_a_broken_config_file_is_one_line(tmp_path, text, variant, expected):
    if text is None:
        path = "configs/synthetc.py"  # relative to the repository, as the user typed it
    else:
        path = str(tmp_path / "c.py")
        Path(path).write_text(text)
    proc = run_main(["--config", path + variant, "--workdir", str(tmp_path / "w")])
    assert expected in _one_line_error(proc)
    assert not (tmp_path / "w").exists()


def test_an_unknown_variant_names_the_variants(tmp_path):
    proc = run_main(["--config", "configs/synthetic.py:smok", "--workdir", str(tmp_path / "w")])
    line = _one_line_error(proc)
    assert line.endswith("unknown variant 'smok'; expected '' (the main job) or 'smoke'") and len(line) < 200


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A random `small` backbone and refiner for tests/configs/tiny.py (5 classes)."""
    return save_random_weights(tmp_path_factory.mktemp("tiny_weights"), "small", 5)


def _png(path: str | bytes, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    with open(path, "wb") as f:  # not cv2.imwrite: the name may not be UTF-8
        f.write(cv2.imencode(".png", image)[1].tobytes())


def test_predict_takes_any_file_name_and_skips_sub_folders(tmp_path, tiny_weights):
    """A name that is not UTF-8 (OpenCV crashed on it), a folder named like an image (a traceback), a comma
    in a name (split in two): every image is predicted, into a workdir whose name is not UTF-8 either."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "sub.png").mkdir()
    _png(os.path.join(os.fsencode(images), b"bad\xff.png"), 0)
    _png(str(images / "a,b.png"), 1)
    other = tmp_path / "other.png"
    _png(str(other), 2)
    work = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xfe"))
    proc = run_main(["--config", TINY, "--mode=predict", "--workdir", work, *_weights(tiny_weights),
                     "--image", str(images), "--image", f"{images / 'a,b.png'}", f"--image={other}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad\\xff.png: " in proc.stdout and "predicted 3 of 3 images" in proc.stdout
    outputs = sorted(os.listdir(os.fsencode(work)))
    assert outputs == [b".magnet_jax.lock", b"a,b", b"bad\xff", b"other", b"predict_summary.json"]
    assert os.path.isfile(os.path.join(os.fsencode(work), b"bad\xff", b"predictions.npz"))


def test_image_flags_split_at_commas_only_between_paths(tmp_path, tiny_weights):
    for i, name in enumerate(("x.png", "y.png", "a,b.png")):
        _png(str(tmp_path / name), i)
    proc = run_main(["--config", TINY, "--mode=predict", "--workdir", str(tmp_path / "w"), *_weights(tiny_weights),
                     f"--image={tmp_path / 'x.png'},{tmp_path / 'a,b.png'},{tmp_path / 'y.png'}"])  # fmt: skip
    assert proc.returncode == 0 and "predicted 3 of 3 images" in proc.stdout, proc.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "w").iterdir() if p.is_dir()) == ["a,b", "x", "y"]
    proc = run_main(["--config", TINY, "--mode=predict", "--workdir", str(tmp_path / "w"), *_weights(tiny_weights),
                     f"--image={tmp_path / 'x.png'},{tmp_path / 'nothing.png'}"])  # fmt: skip
    assert "--image: " in _one_line_error(proc) and "nothing.png (no such file)" in proc.stderr


def test_training_refuses_a_workdir_name_that_is_not_utf8(tmp_path):
    work = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"w\xff"))
    proc = run_main(["--config", TINY, "--workdir", work, f"--config.data.root={tmp_path / 'd'}"])
    assert "w\\xff: training needs a folder name that is valid UTF-8" in _one_line_error(proc)
    assert os.listdir(tmp_path) == []  # refused before the folder is made


def test_a_sweep_line_cut_short_is_dropped_and_run_again(tmp_path, tiny_weights):
    work, data = tmp_path / "w", tmp_path / "d"
    args = ["--config", SWEEP, "--mode=sweep", "--workdir", str(work), f"--config.data.root={data}",
            *_weights(tiny_weights)]  # fmt: skip
    assert run_main(args).returncode == 0
    path = work / "sweep.jsonl"
    whole = path.read_bytes()
    first, second = whole.splitlines(keepends=True)
    path.write_bytes(first + second[: len(second) // 2])  # killed while writing the second point
    proc = run_main(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "its last line was cut short" in proc.stderr and "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["name"] for r in rows] == [json.loads(first)["name"], json.loads(second)["name"]]
    assert rows[1]["miou"] == json.loads(second)["miou"]  # the point ran again, to the same numbers
    path.write_bytes(b"not json\n" + whole)  # a bad line elsewhere is not a cut-short write: refused, kept
    proc = run_main(args)
    assert "sweep.jsonl: line 1 is not a sweep result" in _one_line_error(proc)
    assert path.read_bytes() == b"not json\n" + whole


def test_a_second_run_in_a_held_workdir_is_refused(tmp_path, tiny_weights):
    """The lock of another process (this test's) on the workdir: refused before any work, naming its pid."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "notes.txt").write_text("mine\n")
    (work / ".magnet_jax.lock").touch()
    before = tree_hash(work)  # first: closing any file of the lock's would release this process's lock
    with open(work / ".magnet_jax.lock", "a") as held:
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for mode in ("train", "evaluate"):
            proc = run_main(["--config", TINY, f"--mode={mode}", "--workdir", str(work),
                             f"--config.data.root={tmp_path / 'd'}", *_weights(tiny_weights)])  # fmt: skip
            line = _one_line_error(proc)
            assert f"--workdir {work}: in use by another run (pid {os.getpid()})" in line
    assert tree_hash(work) == before and not (tmp_path / "d").exists()
    proc = run_main(["--config", TINY, "--mode=evaluate", "--workdir", str(work),
                     f"--config.data.root={tmp_path / 'd'}", *_weights(tiny_weights)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]  # released: the next run goes ahead


@pytest.mark.parametrize("kind", KINDS)
def test_predict_on_a_full_disk_still_writes_its_summary(tmp_path, tiny_weights, kind):
    """The disk fills during the second image (tmpfs), or a figure is over the file-size limit (fsize, the
    first image): one line naming what failed, the incomplete image folder removed, and
    predict_summary.json listing the images written before."""
    for i in range(4):
        _png(str(tmp_path / f"im{i}.png"), i)
    with small_disk(kind, tmp_path, 330 if kind == "tmpfs" else 64) as (disk, limit):
        work = disk / "out"
        proc = run_main_in(["--config", TINY, "--mode=predict", "--workdir", str(work), *_weights(tiny_weights),
                            "--image", str(tmp_path / "im*.png")], REPO, fsize_kb=limit)  # fmt: skip
        line = _one_line_error(proc)
        assert MESSAGES[kind] in line and "were removed; the " in line, line
        summary = json.loads((work / "predict_summary.json").read_text())
        written = [os.path.basename(r["output"]) for r in summary["images"]]
        assert MESSAGES[kind] in summary["stopped"] and f"the {len(written)} images written before" in line
        assert sorted(p.name for p in work.iterdir() if p.is_dir()) == written  # no half-written folder
        assert written == (["im0"] if kind == "tmpfs" else [])
