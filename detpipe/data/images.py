"""Image loading: any mode a user's camera or labelling tool produces becomes 8-bit RGB.

Decoding policy (one rule, applied by every reader: annotate, check-data, the train loader and
predict, stage and command): a file is opened with `open_image`, which reads the header only and
refuses an image of more than `data.max_image_pixels` pixels (`PixelLimit`) before a single pixel
is decoded. So a tiny file declaring huge dimensions (a PNG or TIFF "decompression bomb") costs a
header read, never its decoded size, and everything under the limit decodes alike whatever its
format: only the formats of IMAGE_EXTENSIONS are opened (a file's content decides its format, its
extension only which files are looked at), all through `_decode`.

EXIF orientation policy (one rule, applied everywhere): pixels are returned the way every photo
viewer shows them, i.e. with the EXIF orientation applied (`load_rgb`). VOC labelling tools such
as LabelImg draw on the *stored* pixels, so the annotate stage moves boxes into the same displayed
frame with `exif_transform_boxes` (unless the XML <size> proves the boxes were drawn on the
displayed frame already) and counts a warning for each such image. Pixels and boxes therefore
always agree downstream.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# The Pillow formats those extensions name; Image.open tries no other decoder (EPS, PSD, ICO …
# hidden behind a .jpg name are refused). A JPEG with a multi-picture index opens as MPO.
FORMATS = tuple(sorted({Image.registered_extensions()[e] for e in IMAGE_EXTENSIONS}))
JPEG_FORMATS = ("JPEG", "MPO")  # libjpeg decodes these at 1/2, 1/4 or 1/8 scale on request (draft)
ORIENTATION_TAG = 0x0112
DEFAULT_MAX_PIXELS = 100_000_000  # params.yaml's data.max_image_pixels (tests/test_images.py compares)


@dataclass(frozen=True)
class PixelLimit:
    """The most pixels (width x height) an image may have to be decoded, and the setting that
    says so (named in the error: the params key, or a command-line flag)."""

    pixels: int = DEFAULT_MAX_PIXELS
    key: str = "data.max_image_pixels"


DEFAULT_LIMIT = PixelLimit()


class ImageCheckError(ValueError):
    """An image file cannot be used. `reason` says why, `fix` what to do, `path` which file (when
    known); str() is one line. `kind` is the report's name for it."""

    kind = "bad_image"

    def __init__(self, reason: str, path: str | Path | None = None,
                 fix: str = "re-export the image, or remove it (and its labels)") -> None:
        self.reason, self.path, self.fix = reason, path, fix
        super().__init__(f"{path}: {reason}. Fix: {fix}" if path is not None else reason)


class ImageTooLarge(ImageCheckError):
    """An image above the pixel limit, refused from its header."""

    kind = "image_too_large"

    def __init__(self, size: tuple[int, int], limit: PixelLimit, path: str | Path | None = None) -> None:
        w, h = size
        gigabytes = w * h * 3 / 1e9  # its decoded 8-bit RGB, before any conversion
        super().__init__(f"{w}x{h} pixels ({w * h / 1e6:.1f} MPx) is above the {limit.pixels / 1e6:g} MPx "
                         f"limit ({limit.key}); not decoded", path,
                         f"downscale it, or raise {limit.key} if this machine has the memory (decoding it "
                         f"takes at least {gigabytes:.1f} GB)")
        self.size, self.limit = size, limit


@dataclass(frozen=True)
class ImageInfo:
    """What the check learnt about an image. `width`/`height` are the displayed size (after the
    EXIF orientation, i.e. the shape `load_rgb` returns); `stored_*` are the raw pixel size."""

    width: int
    height: int
    stored_width: int
    stored_height: int
    mode: str
    format: str
    orientation: int


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, 16-bit, float, palette, RGBA, CMYK … to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit data spans 0..65535; round(v / 257) maps it exactly onto 0..255 for every image
        # alike (a per-image max would make the same scene brighter or darker by file). Integer
        # arithmetic: 4 bytes a pixel where float64 took 8.
        arr = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        img = Image.fromarray(((2 * arr + 257) // 514).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (np.nan_to_num(arr, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in img.info:
        # Transparent pixels become mid-grey rather than whatever colour hides under alpha 0.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (114, 114, 114, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or invalid."""
    try:
        value = int(img.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a corrupt EXIF block must not make an otherwise fine image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def _open_checked(path: str | Path, pixel_limit: PixelLimit) -> Image.Image:
    """Image.open (the header only) of an allowed format, refused above the pixel limit."""
    # Pillow's own check would refuse at twice its fixed default whatever the limit, naming neither
    # the file nor the key: ours below replaces it. Its checks while decoding (TIFF tiles) then
    # hold the same limit.
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path, formats=FORMATS)
    finally:
        Image.MAX_IMAGE_PIXELS = pixel_limit.pixels
    if img.width * img.height > pixel_limit.pixels:
        img.close()
        raise ImageTooLarge(img.size, pixel_limit, path)
    return img


@contextmanager
def open_image(path: str | Path, pixel_limit: PixelLimit) -> Iterator[Image.Image]:
    """The image at `path` opened for decoding inside the with block, its size checked from the
    header first. Any error opening or decoding it, there, becomes an ImageCheckError naming the
    file (ImageTooLarge above the limit): a hostile file gives one line, never a traceback."""
    try:
        with _open_checked(path, pixel_limit) as img:
            yield img
    except ImageCheckError:
        raise
    except UnidentifiedImageError:
        raise ImageCheckError(f"not an image (no {', '.join(FORMATS)} decoder recognises its contents)",
                              path) from None
    except MemoryError:
        raise ImageCheckError("not enough memory to decode it", path, f"lower {pixel_limit.key} (and "
                              "data.workers), or free memory") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's error, not the decoder's
            raise ImageCheckError(f"cannot be read ({exc.strerror})", path, "check the file and its "
                                  "permissions") from None
        raise ImageCheckError(f"corrupt or truncated image ({exc})", path) from None
    except Exception as exc:  # decoders of hostile files raise anything: SyntaxError, struct.error …
        raise ImageCheckError(f"corrupt or unsupported image ({type(exc).__name__}: {exc})", path) from None


def _decode(img: Image.Image, reduce_to: tuple[int, int] | None = None) -> tuple[Image.Image, int]:
    """Decode an opened image and apply its EXIF orientation: (displayed image, orientation).
    A JPEG is decoded at the smallest libjpeg scale still >= `reduce_to` (w, h) when given."""
    if reduce_to is not None and img.format in JPEG_FORMATS:
        img.draft(img.mode if img.mode in ("L", "RGB", "CMYK") else "RGB", reduce_to)
    # Read before decoding: Pillow rotates a TIFF itself while loading it, and drops its tag.
    orientation = exif_orientation(img)
    img.load()
    if exif_orientation(img) != 1:  # the formats whose orientation Pillow leaves to the reader
        img = ImageOps.exif_transpose(img)
    return img, orientation


def load_rgb(path: str | Path, pixel_limit: PixelLimit = DEFAULT_LIMIT) -> np.ndarray:
    """Decode an image file to uint8 [H, W, 3] RGB with its EXIF orientation applied.
    Raises ImageCheckError naming the file (ImageTooLarge above `pixel_limit`, from the header)."""
    with open_image(path, pixel_limit) as img:
        return np.ascontiguousarray(np.asarray(to_rgb(_decode(img)[0])))


def load_rgb_scaled(path: str | Path, min_side: int, pixel_limit: PixelLimit = DEFAULT_LIMIT
                    ) -> tuple[np.ndarray, float]:
    """Like `load_rgb`, but a JPEG larger than needed is decoded at a reduced scale (libjpeg
    draft: 1/2, 1/4 or 1/8) so huge photos cost bounded memory. Returns (pixels, scale) where
    original coordinates * scale = coordinates in the returned array. The shorter side stays
    >= min_side (or the original size)."""
    with open_image(path, pixel_limit) as img:
        full_w, full_h = img.size
        reduce_to = None
        if min(full_w, full_h) > 2 * min_side:
            factor = min(full_w, full_h) / min_side
            reduce_to = (int(full_w / factor) + 1, int(full_h / factor) + 1)
        shown, _ = _decode(img, reduce_to)
        scale = img.size[0] / full_w  # `img` itself stays in the header's frame
        return np.ascontiguousarray(np.asarray(to_rgb(shown))), scale


def longer_sides(paths: Iterable[str], pixel_limit: PixelLimit) -> dict[str, int | None]:
    """{path: max(width, height)} from each image's header (no pixel decoded; an EXIF rotation swaps
    width and height, so the longer side is that of the displayed image too); None for a file that
    cannot be opened, which the caller counts."""
    out: dict[str, int | None] = {}
    for path in paths:
        try:
            with open_image(path, pixel_limit) as img:
                out[path] = max(img.size)
        except ImageCheckError:
            out[path] = None
    return out


def check_headers(paths: Iterable[str | Path], pixel_limit: PixelLimit) -> None:
    """Open every image's header and refuse the first one above the limit (ImageTooLarge) or
    unreadable (ImageCheckError): a long run stops before it starts, not in its middle."""
    for path in paths:
        with open_image(path, pixel_limit):
            pass


def exif_transform_boxes(boxes: np.ndarray, orientation: int, width: int, height: int) -> np.ndarray:
    """Map xyxy boxes drawn on the stored pixels (size width x height) into the displayed frame
    that `load_rgb` returns, for EXIF orientation 1..8 (the transposes of ImageOps.exif_transpose)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    w, h = float(width), float(height)
    table = {
        1: (x1, y1, x2, y2),
        2: (w - x2, y1, w - x1, y2),            # mirror left-right
        3: (w - x2, h - y2, w - x1, h - y1),    # rotate 180
        4: (x1, h - y2, x2, h - y1),            # mirror top-bottom
        5: (y1, x1, y2, x2),                    # transpose
        6: (h - y2, x1, h - y1, x2),            # rotate 90 clockwise
        7: (h - y2, w - x2, h - y1, w - x1),    # transverse
        8: (y1, w - x2, y2, w - x1),            # rotate 90 counter-clockwise
    }
    return np.stack(table.get(orientation, table[1]), axis=1)


def inspect_image(path: str | Path, verify: bool = True, pixel_limit: PixelLimit = DEFAULT_LIMIT) -> ImageInfo:
    """Open an image, check its size against `pixel_limit` from the header, read its mode and EXIF
    orientation, and decode it (verify=True) to catch truncated or corrupt files; JPEGs at 1/8
    scale, so the check's memory stays small. Without verify a JPEG's header is all that is read;
    other formats are decoded all the same (within the limit): only then is their orientation
    known as the loader will apply it. Raises ImageCheckError with the reason."""
    with open_image(path, pixel_limit) as img:
        (w, h), mode, fmt = img.size, img.mode, img.format or "?"
        if fmt in JPEG_FORMATS:  # the header's size is the stored one; its orientation is in the header
            orientation = exif_orientation(img)
            if verify:
                _decode(img, (max(1, w // 8), max(1, h // 8)))
            turned = orientation in (5, 6, 7, 8)
            shown = (h, w) if turned else (w, h)
        else:
            decoded, orientation = _decode(img)
            turned, shown = orientation in (5, 6, 7, 8), decoded.size
    stored = (shown[1], shown[0]) if turned else shown
    return ImageInfo(*shown, *stored, mode, fmt, orientation)
