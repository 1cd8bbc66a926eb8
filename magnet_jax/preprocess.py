"""Image preprocessing exactly as the original: OpenCV resizes and ImageNet normalisation; every image
file read and written by magnet-jax goes through `read_image_rgb` / `decode_image_file` / `write_image`.

File names reach OpenCV only as bytes (`np.fromfile` + `cv2.imdecode`, `cv2.imencode` + a Python
write): a name that is not valid UTF-8 (`bad\\xff.png`, held by Python as a surrogate-escaped str)
crashes `cv2.imread` / `cv2.imwrite` in native code. Messages show names through `shown_path`.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resize_image(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """cv2 INTER_LINEAR resize of `[H, W, C]` to `(W, H)`; dtype kept (uint8 rounds like the original)."""
    w, h = size_wh
    if image.shape[1] == w and image.shape[0] == h:
        return image
    return cv2.resize(image, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a `[H, W]` label map to `(W, H)` (cv2 INTER_NEAREST)."""
    w, h = size_wh
    if label.shape[1] == w and label.shape[0] == h:
        return label
    return cv2.resize(label, (int(w), int(h)), interpolation=cv2.INTER_NEAREST)


def coarse_crop(read_scale0, crop_wh: tuple[int, int], input_wh: tuple[int, int]) -> np.ndarray:
    """MagNet's coarse input as the original makes it: the top-left `crop_wh` of the image at the first
    scale (`read_scale0(y0, y1, x0, x1)` reads it by region), resized to `input_wh`: `[ih, iw, 3]` uint8."""
    cw, ch = crop_wh
    return resize_image(np.ascontiguousarray(read_scale0(0, ch, 0, cw)), input_wh)


def normalize(image_u8: np.ndarray) -> np.ndarray:
    """RGB uint8 `[..., H, W, 3]` -> float32 `/255 - mean) / std` (ImageNet statistics)."""
    return ((image_u8.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


class ImageDecodeError(ValueError):
    """An image file that is missing, truncated or corrupt (named in the message)."""


def shown_path(path: str | os.PathLike | bytes) -> str:
    """`path` printable on any console: bytes that are not UTF-8 shown as `\\xff` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def decode_image_file(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """`cv2.imread(path, flags)` without handing OpenCV the name: the bytes are read by numpy and decoded
    (`[H, W, 3]` BGR for IMREAD_COLOR); None when OpenCV cannot decode them (or the file is empty)."""
    data = np.fromfile(os.fspath(path), dtype=np.uint8)
    return cv2.imdecode(data, flags) if data.size else None


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """`cv2.imwrite` through bytes: `image` (`[H, W]` or `[H, W, 3]` BGR) encoded by the file's extension,
    then written by Python (an OSError such as a full disk names the file)."""
    ext = os.path.splitext(os.fspath(path))[1] or ".png"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(image))
    if not ok:
        raise ValueError(f"cannot encode image {shown_path(path)} as {ext}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def check_image_complete(path: str) -> None:
    """Raises ImageDecodeError if `path` is a truncated or corrupt JPEG / PNG.

    OpenCV decodes a truncated JPEG into a grey-filled image with only a warning on stderr; this check
    refuses it: a JPEG must end with its EOI marker (FF D9, trailing padding allowed), a PNG must pass
    Pillow's chunk CRC verification up to its IEND chunk.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 64))
        tail = f.read()
    check_pixel_limit(path)
    if head[:3] == b"\xff\xd8\xff":
        if not tail.rstrip(b"\x00\n\r ").endswith(b"\xff\xd9"):
            raise ImageDecodeError(f"cannot read image {shown_path(path)}: truncated JPEG (no end-of-image marker)")
    elif head == b"\x89PNG\r\n\x1a\n":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - Pillow raises several types for broken files
            raise ImageDecodeError(f"cannot read image {shown_path(path)}: corrupt PNG ({e})") from None


def _png_jpeg_size(path: str) -> tuple[str, int, int] | None:
    """("PNG" | "JPEG", width, height) from the file header (IHDR / the first SOF marker), else None."""
    import struct

    with open(path, "rb") as f:
        head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return "PNG", w, h
        if head[:2] != b"\xff\xd8":
            return None
        f.seek(2)
        while True:
            marker = f.read(4)
            if len(marker) < 4 or marker[0] != 0xFF:
                return None
            kind, length = marker[1], struct.unpack(">H", marker[2:])[0]
            if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):  # start of frame: precision, h, w
                h, w = struct.unpack(">HH", f.read(5)[1:])
                return "JPEG", w, h
            f.seek(length - 2, 1)


def decoded_pixel_limit() -> int:
    """The most pixels a PNG / JPEG may have: Pillow's decompression-bomb limit (it checks PNG files), which
    is below OpenCV's decoder limit (2^30 pixels)."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS or 2**29)


def check_pixel_limit(path: str) -> None:
    """ImageDecodeError for a PNG / JPEG above `decoded_pixel_limit()`: such images are decoded whole in memory;
    a tiled TIFF is read by region (`rasters/large_io.py`), so the message gives the conversion command."""
    found = _png_jpeg_size(path)
    if found is None or found[1] * found[2] <= decoded_pixel_limit():
        return
    kind, w, h = found
    raise ImageDecodeError(
        f"cannot read image {path}: a {w}x{h} {kind} ({w * h / 1e6:.0f} Mpx) is above the "
        f"{decoded_pixel_limit() / 1e6:.0f} Mpx limit of PNG / JPEG inputs, which are decoded whole in memory; "
        "images this large are read by region from a tiled TIFF: "
        f"convert it, e.g. `vips tiffsave {path} out.tif --tile --pyramid --compression deflate --bigtiff` or "
        f"`python -c \"import cv2, tifffile; tifffile.imwrite('out.tif', cv2.imread('{path}')[..., ::-1], "
        "tile=(512, 512), compression='zlib', bigtiff=True)\"`, then predict out.tif"
    )


def read_image_rgb(path: str) -> np.ndarray:
    """Reads an image file as RGB uint8 `[H, W, 3]`, strictly: a missing, truncated or corrupt file is an
    error naming it (FileNotFoundError / ImageDecodeError), never a grey fill."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"image not found: {shown_path(path)}")
    if os.path.isdir(path):
        raise ImageDecodeError(f"cannot read image {shown_path(path)}: a folder, not an image file")
    check_image_complete(path)
    image = decode_image_file(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"cannot read image {shown_path(path)}: not an image file OpenCV can decode, or corrupt")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
