"""Image loading: any mode a user's camera or labelling tool produces becomes 8-bit RGB.

EXIF orientation policy (one rule, applied everywhere): pixels are returned the way every photo
viewer shows them, i.e. with the EXIF orientation applied (`load_rgb`). VOC labelling tools such
as LabelImg draw on the *stored* pixels, so the annotate stage moves boxes into the same displayed
frame with `exif_transform_boxes` (unless the XML <size> proves the boxes were drawn on the
displayed frame already) and counts a warning for each such image. Pixels and boxes therefore
always agree downstream.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
ORIENTATION_TAG = 0x0112
# Above this many pixels a non-JPEG is checked by streaming (verify) instead of decoding, so the
# check's memory stays bounded; JPEGs are always decoded at 1/8 scale via draft mode.
VERIFY_STREAM_PIXELS = 16_000_000


class ImageCheckError(ValueError):
    """An image file cannot be used; the message says why."""


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
    huge: bool = False


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert grayscale, 16-bit, float, palette, RGBA, CMYK … to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit data spans 0..65535; dividing by 257 maps it exactly onto 0..255 for every image
        # alike (a per-image max would make the same scene brighter or darker by file).
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")
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


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 [H, W, 3] RGB with its EXIF orientation applied."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img) if exif_orientation(img) != 1 else img
        return np.ascontiguousarray(np.asarray(to_rgb(img)))


def load_rgb_scaled(path: str | Path, min_side: int) -> tuple[np.ndarray, float]:
    """Like `load_rgb`, but a JPEG larger than needed is decoded at a reduced scale (libjpeg
    draft: 1/2, 1/4 or 1/8) so huge photos cost bounded memory. Returns (pixels, scale) where
    original coordinates * scale = coordinates in the returned array. The shorter side stays
    >= min_side (or the original size)."""
    with Image.open(path) as img:
        full_w, full_h = img.size
        if img.format == "JPEG" and min(full_w, full_h) > 2 * min_side:
            factor = min(full_w, full_h) / min_side
            img.draft("RGB", (int(full_w / factor) + 1, int(full_h / factor) + 1))
        img.load()
        scale = img.size[0] / full_w
        img = ImageOps.exif_transpose(img) if exif_orientation(img) != 1 else img
        return np.ascontiguousarray(np.asarray(to_rgb(img))), scale


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


def _decode_check(img: Image.Image, pixels: int) -> None:
    """Decode (or stream-verify) enough of the file to catch truncation, memory bounded."""
    if img.format == "JPEG":
        w, h = img.size
        img.draft(img.mode if img.mode in ("L", "RGB", "CMYK") else "RGB", (max(1, w // 8), max(1, h // 8)))
        img.load()
    elif pixels > VERIFY_STREAM_PIXELS:
        img.verify()
    else:
        img.load()


def inspect_image(path: str | Path, verify: bool = True) -> ImageInfo:
    """Open an image, read its size, mode and EXIF orientation, and (verify=True) decode it to
    catch truncated or corrupt files. Raises ImageCheckError with the reason."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                info_mode, fmt, orientation = img.mode, img.format or "?", exif_orientation(img)
                if verify:
                    _decode_check(img, w * h)
        huge = any(issubclass(c.category, Image.DecompressionBombWarning) for c in caught)
    except Image.DecompressionBombError as exc:
        raise ImageCheckError(f"image too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise ImageCheckError("not an image (no image format recognises its contents)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageCheckError(f"corrupt or truncated image ({exc})") from None
    dw, dh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    return ImageInfo(dw, dh, w, h, info_mode, fmt, orientation, huge)
