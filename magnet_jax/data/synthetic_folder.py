"""Where the synthetic dataset (`synthetic.py`) is written, and when it is (re)generated.

A folder is generated once per settings (`META_FILE` records them: size, seed, counts) and reused while
they match. magnet-jax marks every folder it generates (`MARKER_FILE`); only such a folder, holding
nothing but the files generated there, is regenerated when the settings change. Anything else is left
untouched with one line naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile

import cv2

from magnet_jax.data.errors import DataError
from magnet_jax.data.lists import write_file_list
from magnet_jax.data.synthetic import SPLIT_IDS, VERSION, generate_sample
from magnet_jax.preprocess import write_image

META_FILE = "synthetic.json"
MARKER_FILE = ".magnet_jax_synthetic"  # written in every folder magnet-jax generates: only those are regenerated
TMP_PREFIX = ".synthetic_tmp_"  # + host.pid.random: a generation in progress


def _meta(cfg) -> dict:
    return {
        "version": VERSION,
        "size": int(cfg.size),
        "seed": int(cfg.seed),
        "num_train": int(cfg.num_train),
        "num_val": int(cfg.num_val),
        "num_test": int(cfg.num_test),
    }


def _read_meta(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_dataset(folder: str, cfg) -> None:
    """Writes every split of the dataset described by `cfg` (config.data.synthetic) into `folder`."""
    meta = _meta(cfg)
    for split in ("train", "val", "test"):
        pairs = []
        os.makedirs(os.path.join(folder, split, "images"), exist_ok=True)
        os.makedirs(os.path.join(folder, split, "labels"), exist_ok=True)
        for i in range(meta[f"num_{split}"]):
            image, label = generate_sample(meta["seed"], split, i, meta["size"])
            image_rel = f"{split}/images/{i:04d}.png"
            label_rel = f"{split}/labels/{i:04d}.png"
            write_image(os.path.join(folder, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            write_image(os.path.join(folder, label_rel), label)
            pairs.append((image_rel, label_rel))
        write_file_list(os.path.join(folder, f"{split}.txt"), pairs)
    with open(os.path.join(folder, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def _foreign_files(folder: str, meta: dict) -> list[str]:
    """What in `folder` magnet-jax did not write for the dataset `meta` (relative paths, sorted)."""
    known = {META_FILE, MARKER_FILE} | {f"{split}.txt" for split in SPLIT_IDS}
    for split in SPLIT_IDS:
        known |= {split, f"{split}/images", f"{split}/labels"}
        for i in range(int(meta.get(f"num_{split}", 0))):
            known |= {f"{split}/images/{i:04d}.png", f"{split}/labels/{i:04d}.png"}
    foreign = []
    for here, dirs, files in os.walk(folder):
        foreign += [p for f in dirs + files if (p := os.path.relpath(os.path.join(here, f), folder)) not in known]
    return sorted(foreign)


def _clean_stale_temporaries(parent: str) -> None:
    """Removes the temporary folders of generations whose process is gone (killed mid-generation)."""
    host = socket.gethostname()
    for name in os.listdir(parent):
        if not name.startswith(TMP_PREFIX):
            continue
        try:
            tmp_host, pid, _ = name[len(TMP_PREFIX) :].rsplit(".", 2)
            alive = tmp_host != host or _pid_alive(int(pid))  # another host's: it may still be writing
        except ValueError:
            alive = False  # an older name without host and pid: no generation of this version owns it
        if not alive:
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_dataset(folder: str, cfg) -> str:
    """Generates the dataset into `folder` unless it already holds this exact one (same size, seed, counts).

    Only a folder magnet-jax created (its `MARKER_FILE`) holding nothing but a generated dataset is
    regenerated with new settings; anything else (a non-empty folder of other files, a generated folder a
    user added files to) is left untouched with a DataError naming it. Generation goes to a temporary
    folder renamed at the end, so an interrupted run leaves nothing half-written, and the temporary
    folders of killed generations are removed on the next start.
    """
    for split in ("train", "val", "test"):
        if int(cfg[f"num_{split}"]) < 1:
            raise DataError(f"config.data.synthetic.num_{split} must be >= 1, got {cfg[f'num_{split}']}")
    meta = _meta(cfg)
    parent = os.path.dirname(os.path.abspath(folder))
    if os.path.isdir(parent):
        _clean_stale_temporaries(parent)
    if _read_meta(folder) == meta:
        return folder
    if os.path.isdir(folder) and os.listdir(folder):
        old = _read_meta(folder)
        if old is None or not os.path.isfile(os.path.join(folder, MARKER_FILE)):
            raise DataError(
                f"{folder!r} is not empty and is not a synthetic dataset magnet-jax generated (no {MARKER_FILE}); "
                "refusing to write the synthetic dataset there. Point config.data.root elsewhere or empty the folder."
            )
        foreign = _foreign_files(folder, old)
        if foreign:
            raise DataError(
                f"{folder!r} holds a synthetic dataset made with other settings and files magnet-jax did not write "
                f"({', '.join(foreign[:3])}); nothing was deleted. Move those files out, or point config.data.root "
                "to another folder"
            )
    os.makedirs(parent, exist_ok=True)
    total = meta["num_train"] + meta["num_val"] + meta["num_test"]
    print(f"generating the synthetic dataset ({total} images of {meta['size']}x{meta['size']}) into {folder} ...",
          file=sys.stderr, flush=True)  # fmt: skip
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{socket.gethostname()}.{os.getpid()}.", dir=parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a folder as mkdir makes it (mkdtemp's is private)
        write_dataset(tmp, cfg)
        with open(os.path.join(tmp, MARKER_FILE), "w") as f:
            f.write("generated by magnet-jax (magnet_jax/data/synthetic.py); regenerated when its settings change\n")
        if os.path.isdir(folder):
            if _read_meta(folder) == meta:  # another process finished first
                return folder
            shutil.rmtree(folder)  # checked above: only what magnet-jax generated
        try:
            os.rename(tmp, folder)
        except OSError:
            if _read_meta(folder) != meta:  # not another process of this run finishing first
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
