"""Small fake datasets written to disk, in the real challenges' layouts and file names (tests, benchmarks).

Nothing here is used in training; it lets the real loading and preparing code run on files without a
download: Cityscapes zips / tree, DeepGlobe land-train, the Gleason 2019 download (Train Imgs, Maps1_T ...
Maps6_T), Inria Aerial's AerialImageDataset/train/{images,gt}.
"""

from __future__ import annotations

import os
import zipfile

import cv2
import numpy as np

from magnet_jax.data.datasets.cityscapes import ID_TO_TRAIN_ID as CITYSCAPES_ID_TO_TRAIN_ID
from magnet_jax.data.datasets.deepglobe import COLORS as DEEPGLOBE_COLORS
from magnet_jax.data.lists import write_file_list


def _encode(ext: str, array: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, array, params or [])
    if not ok:
        raise RuntimeError(f"cv2 could not encode {ext}")
    return buf.tobytes()


def blob_label(rng: np.random.Generator, h: int, w: int, values: list[int], n_blobs: int = 6) -> np.ndarray:
    """`[h, w]` int map of random rectangles and discs with the given values (first value = background)."""
    label = np.full((h, w), values[0], np.int32)
    for _ in range(n_blobs):
        v = values[int(rng.integers(0, len(values)))]
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(max(2, min(h, w) // 10), max(3, min(h, w) // 3)))
        if rng.integers(0, 2):
            label[max(0, cy - r) : cy + r, max(0, cx - r) : cx + r] = v
        else:
            yy, xx = np.ogrid[:h, :w]
            label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = v
    return label


def fake_photo(rng: np.random.Generator, h: int, w: int, label: np.ndarray | None = None, noise: float = 12.0
               ) -> np.ndarray:
    """RGB uint8 `[h, w, 3]`: smooth colours (per label value when given) plus noise, like a photo."""
    base = cv2.resize(rng.uniform(40, 210, (4, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if label is not None:
        tint = rng.uniform(-40, 40, (int(label.max()) + 1, 3)).astype(np.float32)
        base = base + tint[label]
    if noise > 0:
        base = base + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_deepglobe(root: str, n: int, size: int = 64, *, seed: int = 0, lists_dir: str | None = None,
                    jpeg_quality: int = 90, ids=None) -> list[tuple[str, str]]:
    """`root/land-train/<id>_sat.jpg` + `<id>_mask.png` (exact DeepGlobe colours); optional list of all.

    ids: the image ids (default 1000, 1007, ...; `n` is then their count)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "land-train")
    os.makedirs(folder, exist_ok=True)
    colors = np.asarray(DEEPGLOBE_COLORS, np.uint8)
    pairs = []
    for ident in (ids if ids is not None else [1000 + 7 * i for i in range(n)]):
        label = blob_label(rng, size, size, list(range(7)), n_blobs=8)
        image = fake_photo(rng, size, size, label)
        image_rel, mask_rel = f"land-train/{ident}_sat.jpg", f"land-train/{ident}_mask.png"
        cv2.imwrite(os.path.join(root, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        cv2.imwrite(os.path.join(root, mask_rel), cv2.cvtColor(colors[label], cv2.COLOR_RGB2BGR))
        pairs.append((image_rel, mask_rel))
    if lists_dir:
        for split in ("train", "val", "test"):
            write_file_list(os.path.join(lists_dir, f"{split}.txt"), pairs)
    return pairs


def _cityscapes_arrays(rng: np.random.Generator, h: int, w: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    ids = [0, 1, 4, 9, 14, 30] + sorted(CITYSCAPES_ID_TO_TRAIN_ID)  # some ignored ids, all train ids
    label = blob_label(rng, h, w, ids, n_blobs=10).astype(np.uint8)
    return fake_photo(rng, h, w, label, noise), label


CITYSCAPES_LAYOUT = {"train": ("aachen", 2), "val": ("frankfurt", 1), "test": ("berlin", 1)}


def cityscapes_files(h: int, w: int, seed: int = 0, layout=None, noise: float = 12.0):
    """Yields (relative image path, png bytes, relative label path, png bytes) in the official layout."""
    rng = np.random.default_rng(seed)
    for split, (city, n) in (layout or CITYSCAPES_LAYOUT).items():
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            image, label = _cityscapes_arrays(rng, h, w, noise)
            yield (
                f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                _encode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]),
                f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png",
                _encode(".png", label),
            )


def write_cityscapes_zips(folder: str, h: int = 1024, w: int = 2048, seed: int = 0, layout=None,
                          noise: float = 0.0) -> None:
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in the official layout (TFDS needs 2048x1024)."""
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(os.path.join(folder, "leftImg8bit_trainvaltest.zip"), "w") as zi, \
            zipfile.ZipFile(os.path.join(folder, "gtFine_trainvaltest.zip"), "w") as zl:
        for image_rel, image_png, label_rel, label_png in cityscapes_files(h, w, seed, layout, noise):
            zi.writestr(image_rel, image_png)
            zl.writestr(label_rel, label_png)


def write_cityscapes_tree(root: str, h: int = 32, w: int = 64, seed: int = 0, layout=None) -> None:
    """The unzipped layout (leftImg8bit/, gtFine/) under `root`."""
    for image_rel, image_png, label_rel, label_png in cityscapes_files(h, w, seed, layout):
        for rel, data in ((image_rel, image_png), (label_rel, label_png)):
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)


def write_gleason_download(folder: str, cores, size: int = 32, *, seed: int = 0, maps=None) -> dict:
    """The Gleason 2019 training download, extracted: `folder/Train Imgs/<core>.jpg` and
    `folder/Maps{k}_T/<core>_classimg_nonconvex.png` (raw grades 0, 1, 3, 4, 5 per pathologist).

    maps: {core: [grade map [size, size] uint8 per pathologist k = 1..]} to write given maps; by default
    three random pathologists' maps per core. Returns {core: [maps written]}.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "Train Imgs"), exist_ok=True)
    written = {}
    for core in cores:
        core_maps = (maps or {}).get(core)
        if core_maps is None:
            base = blob_label(rng, size, size, [0, 1, 3, 4, 5], n_blobs=5)
            core_maps = []
            for _ in range(3):
                m = base.copy()
                m[rng.random((size, size)) < 0.2] = 3  # pathologists disagree on a fifth of the pixels
                core_maps.append(m.astype(np.uint8))
        first = next(m for m in core_maps if m is not None)
        image = fake_photo(rng, size, size, np.asarray(first).astype(np.int64))
        cv2.imwrite(os.path.join(folder, "Train Imgs", f"{core}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        for k, m in enumerate(core_maps, start=1):
            if m is None:
                continue  # this pathologist did not annotate the core
            os.makedirs(os.path.join(folder, f"Maps{k}_T"), exist_ok=True)
            cv2.imwrite(os.path.join(folder, f"Maps{k}_T", f"{core}_classimg_nonconvex.png"), np.asarray(m, np.uint8))
        written[core] = core_maps
    return written


def write_inria(root: str, tiles, size: int = 32, *, seed: int = 0) -> None:
    """Inria Aerial's layout: `root/AerialImageDataset/train/images/<tile>.tif` (RGB) and
    `.../train/gt/<tile>.tif` (single-channel 0/255 building masks)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "AerialImageDataset", "train")
    for sub in ("images", "gt"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for tile in tiles:
        label = blob_label(rng, size, size, [0, 1], n_blobs=4)
        image = fake_photo(rng, size, size, label)
        cv2.imwrite(os.path.join(base, "images", f"{tile}.tif"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(base, "gt", f"{tile}.tif"), (label * 255).astype(np.uint8))
