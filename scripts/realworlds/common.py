"""What the realdata worlds share: noise, textures, anti-aliased masks, visible-pixel boxes, camera
effects and the VOC writing loop.

Image i of a world comes from ``np.random.default_rng([seed, i])`` alone, so adding images never
changes earlier ones; the bytes repeat for the same numpy, Pillow and OpenCV versions. A box is the
extent of the pixels an object shows in the final picture (covered by a later object or an occluder
they are not its own), in VOC's 1-based inclusive coordinates, computed before blur and noise as a
labeller would draw it on the sharp object.
"""
from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

# scripts.synth writes the demo's VOC files; the worlds write the same format.
from scripts.synth import voc_folders, write_voc_item

SUPERSAMPLE = 3           # masks are rasterised at 3x and averaged: anti-aliased edges
VISIBLE = 0.5             # a pixel shows an object from this coverage on
MIN_CONTRAST = 24.0       # grey levels: most of a labelled object differs this much from what is under it
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
TextureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]   # (u, v) [...] -> rgb [..., 3] 0-255


@dataclass
class Layer:
    """One object (or distractor) ready to composite: colour and coverage on a patch at (x0, y0)."""

    name: str | None          # class name; None: a distractor, never labelled
    x0: int
    y0: int
    rgb: np.ndarray           # [h, w, 3] float 0-255
    alpha: np.ndarray         # [h, w] float coverage 0-1
    depth: float = 0.0        # painted in increasing depth: larger is nearer the camera
    shadow: tuple[int, int, np.ndarray, float, float] | None = None  # cast shadow: x0, y0, coverage, strength, blur


# ----------------------------------------------------------------------------- noise
def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features about `cell` pixels wide, float32 [h, w]."""
    gh, gw = max(2, int(h / cell) + 3), max(2, int(w / cell) + 3)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Sum of value noise octaves (each half the cell and half the amplitude), about [-1, 1]."""
    out, amp, total = np.zeros((h, w), np.float32), 1.0, 0.0
    for k in range(octaves):
        out += amp * value_noise(rng, h, w, max(cell / 2 ** k, 1.5))
        total += amp
        amp /= 2
    return out / total


def noise_sampler(rng: np.random.Generator, size: int = 64) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A tileable smooth noise field f(u, v) in about [-1, 1] for any coordinate arrays (period 1)."""
    cells, pad = 16, 3
    grid = np.pad(rng.uniform(-1, 1, (cells, cells)).astype(np.float32), pad, mode="wrap")
    step = size // cells  # resize the wrapped grid and keep one period: no seam where it repeats
    big = cv2.resize(grid, ((cells + 2 * pad) * step,) * 2, interpolation=cv2.INTER_CUBIC)
    field = np.ascontiguousarray(big[pad * step:(pad + cells) * step, pad * step:(pad + cells) * step])
    size = field.shape[0]

    def sample(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mx = ((np.asarray(u, np.float32) % 1.0) * size).ravel()
        my = ((np.asarray(v, np.float32) % 1.0) * size).ravel()
        n = mx.size
        pad = -n % 1024  # remap takes at most 32767 rows: sample as rows of 1024
        mx, my = (np.pad(m, (0, pad)).reshape(-1, 1024) for m in (mx, my))
        flat = cv2.remap(field, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return flat.ravel()[:n].reshape(np.shape(u))
    return sample


# ----------------------------------------------------------------------------- colours and textures
def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB 0-255 of a hue (any float, wraps), saturation and value in 0-1."""
    rgb = cv2.cvtColor(np.array([[[h % 1.0 * 360, s, v]]], np.float32), cv2.COLOR_HSV2RGB)
    return rgb.reshape(3).astype(np.float64) * 255.0


def any_colour(rng: np.random.Generator) -> np.ndarray:
    """Any hue and brightness, a fifth of the time a grey: colour tells no class apart."""
    if rng.random() < 0.2:
        return np.full(3, rng.uniform(25, 235))
    return hsv(rng.random(), rng.uniform(0.2, 0.95), rng.uniform(0.25, 0.95))


def texture(rng: np.random.Generator) -> TextureFn:
    """A random surface pattern over texture coordinates (u, v) (period about 1): solid, stripes,
    checks, dots, wood grain, marble or speckle, in random colours. Every world draws object
    textures from this one bank, so texture and colour never give a class away."""
    a, b = any_colour(rng), any_colour(rng)
    noise = noise_sampler(rng)
    kind = int(rng.integers(7))
    f = float(rng.uniform(2, 7))
    angle = rng.uniform(0, np.pi)
    ca, sa = math.cos(angle), math.sin(angle)
    grain = rng.uniform(8, 30)

    def mix(t: np.ndarray) -> np.ndarray:
        t = np.clip(t, 0, 1)[..., None]
        return a * (1 - t) + b * t

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        n = noise(u * 2, v * 2)
        r = u * ca + v * sa
        if kind == 0:
            out = np.broadcast_to(a, u.shape + (3,)) + (14 * n)[..., None]
        elif kind == 1:
            out = mix((np.sin(2 * np.pi * f * r) > 0).astype(np.float32))
        elif kind == 2:
            out = mix(((np.floor(u * f) + np.floor(v * f)) % 2).astype(np.float32))
        elif kind == 3:
            du, dv = (u * f) % 1 - 0.5, (v * f) % 1 - 0.5
            out = mix((du ** 2 + dv ** 2 < 0.09).astype(np.float32))
        elif kind == 4:
            out = mix(0.5 + 0.5 * np.sin(2 * np.pi * (f * 2 * r + 1.5 * n)))
        elif kind == 5:
            out = mix(np.abs(np.sin(2 * np.pi * (f * r + 2.5 * n))) ** 0.5)
        else:
            out = mix(0.5 + 0.5 * noise(u * 8, v * 8))
        return out + (grain * noise(u * 13 + 0.3, v * 13 + 0.7))[..., None] * 0.4
    return fn


# ----------------------------------------------------------------------------- masks and compositing
def polygon_coverage(polys: list[np.ndarray], pad: float = 1.0) -> tuple[int, int, np.ndarray]:
    """Anti-aliased coverage of filled polygons (later ones cut holes) on the smallest patch.

    polys: [K, 2] float (x, y) image pixels. Returns (x0, y0, coverage [h, w] float32 0-1)."""
    pts = np.concatenate(polys)
    x0, y0 = math.floor(pts[:, 0].min() - pad), math.floor(pts[:, 1].min() - pad)
    w = math.ceil(pts[:, 0].max() + pad) - x0
    h = math.ceil(pts[:, 1].max() + pad) - y0
    return x0, y0, coverage_on(polys, x0, y0, h, w)


def coverage_on(polys: list[np.ndarray], x0: int, y0: int, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage [h, w] float32 0-1 of filled polygons (later ones cut holes) on the
    patch whose top-left pixel is (x0, y0). polys: [K, 2] float (x, y) image pixels."""
    s = SUPERSAMPLE
    canvas = np.zeros((h * s, w * s), np.uint8)
    for k, p in enumerate(polys):
        # fillPoly fills the subpixels whose index lies inside; subpixel j's centre is at (j + 0.5) / s
        q = np.round(((p - [x0, y0]) * s - 0.5) * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(canvas, [q], 0 if k else 255, lineType=cv2.LINE_8, shift=4)
    return canvas.reshape(h, s, w, s).mean(axis=(1, 3)).astype(np.float32) / 255.0


def downsample(a: np.ndarray, s: int) -> np.ndarray:
    """Box-filter an array of shape [h*s, w*s, ...] to [h, w, ...]."""
    h, w = a.shape[0] // s, a.shape[1] // s
    return a[:h * s, :w * s].reshape(h, s, w, s, *a.shape[2:]).mean(axis=(1, 3))


def patch_slices(x0: int, y0: int, shape: tuple[int, int], h: int, w: int):
    """(image slices, patch slices) of a patch at (x0, y0) clipped to an h x w image, or None."""
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + shape[1], w), min(y0 + shape[0], h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return ((slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)))


def blend(canvas: np.ndarray, rgb: np.ndarray | tuple, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Composite a patch (or a flat colour) with coverage `alpha` onto canvas [H, W, 3] in place."""
    where = patch_slices(x0, y0, alpha.shape, *canvas.shape[:2])
    if where is None:
        return
    region, patch = where
    a = alpha[patch][..., None]
    colour = rgb[patch] if isinstance(rgb, np.ndarray) and rgb.ndim == 3 else np.asarray(rgb, np.float32)
    canvas[region] = canvas[region] * (1 - a) + colour * a


def shadow(canvas: np.ndarray, alpha: np.ndarray, x0: int, y0: int, strength: float, blur: float) -> None:
    """Darken the canvas under a blurred copy of a coverage patch (a soft cast shadow)."""
    pad = int(3 * blur) + 1
    a = np.pad(alpha, pad)
    if blur > 0:
        a = cv2.GaussianBlur(a, (0, 0), blur)
    blend(canvas, (0.0, 0.0, 0.0), a * strength, x0 - pad, y0 - pad)


def composite(canvas: np.ndarray, layers: list[Layer], min_visible: float,
              occluder: np.ndarray | None = None) -> list[dict]:
    """Paint the layers far to near and return the labelled objects that stay visible enough.

    An object that would show less than `min_visible` of its pixels (covered by nearer layers, the
    image border or `occluder`, a [H, W] bool mask painted by the caller afterwards) is not painted
    at all: a labeller cannot label what is not there, and an unlabelled object would teach the
    model to miss it. Dropping one only uncovers others, so the loop ends."""
    h, w = canvas.shape[:2]
    layers = sorted(layers, key=lambda ly: ly.depth)
    keep = [True] * len(layers)
    while True:
        owner = np.full((h, w), -1, np.int32)
        for k, ly in enumerate(layers):
            where = patch_slices(ly.x0, ly.y0, ly.alpha.shape, h, w)
            if keep[k] and where is not None:
                region, patch = where
                owner[region][ly.alpha[patch] >= VISIBLE] = k
        if occluder is not None:
            owner[occluder] = -1
        shown = np.bincount(owner.ravel() + 1, minlength=len(layers) + 1)[1:]
        bad = [k for k, ly in enumerate(layers) if keep[k] and ly.name is not None
               and shown[k] < max(min_visible * int((ly.alpha >= VISIBLE).sum()), 1)]
        if not bad:
            break
        keep[bad[0]] = False
    objects = []
    for k, ly in enumerate(layers):
        if not keep[k]:
            continue
        if ly.name is not None:   # against the ground, not its own shadow
            ly.rgb = with_contrast(canvas, ly, owner == k)
        if ly.shadow is not None:
            sx, sy, cov, strength, blur = ly.shadow
            shadow(canvas, cov, sx, sy, strength, blur)
        blend(canvas, ly.rgb, ly.alpha, ly.x0, ly.y0)
        if ly.name is None:
            continue
        ys, xs = np.nonzero(owner == k)
        full = int((ly.alpha >= VISIBLE).sum())
        objects.append({"name": ly.name, "box": (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1,
                                                 int(ys.max()) + 1),
                        "truncated": bool(len(xs) < full), "difficult": False})
    return objects


def with_contrast(canvas: np.ndarray, ly: Layer, shown: np.ndarray) -> np.ndarray:
    """The layer's colours, brightened or darkened so that most of its shown pixels (shown: [H, W]
    bool) differ from the canvas under them by MIN_CONTRAST grey levels (the median does): a dark
    boat on dark water, or a grey car on a grey lot with only its windows showing, would otherwise
    be a label nobody could see (in a grey picture least of all)."""
    region, patch = patch_slices(ly.x0, ly.y0, ly.alpha.shape, *canvas.shape[:2])
    mine = shown[region]
    if not mine.any():
        return ly.rgb
    diff = ly.rgb[patch][mine] @ LUMA - canvas[region][mine] @ LUMA
    if np.median(np.abs(diff)) >= MIN_CONTRAST:
        return ly.rgb
    # Away from the background (median(|d + up|) >= median(d + up) >= MIN_CONTRAST), unless that
    # leaves the 0-255 range.
    up, down = MIN_CONTRAST - np.median(diff), MIN_CONTRAST + np.median(diff)
    mean = float(ly.rgb[patch][mine].mean())
    brighter = (diff.mean() >= 0 or mean - down < 0) and mean + up <= 255
    return np.clip(ly.rgb + (max(up, 0.0) if brighter else -max(down, 0.0)), 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------- camera
def camera(rng: np.random.Generator, img: np.ndarray, blur: tuple[float, float], noise: tuple[float, float],
           p_motion: float = 0.0) -> np.ndarray:
    """What a cheap camera adds: white balance, gamma, vignette, defocus (and now and then motion)
    blur and sensor noise that is stronger in the dark. img: [H, W, 3] float 0-255; returns uint8."""
    h, w = img.shape[:2]
    img = img * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img = img * (1 - rng.uniform(0, 0.35) * r2 / 2)[..., None]
    sigma = rng.uniform(*blur)
    if sigma > 0.05:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < p_motion:
        length, angle = int(rng.integers(3, 8)), rng.uniform(0, 180)
        k = np.zeros((length, length), np.float32)
        k[length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), angle, 1.0)
        k = cv2.warpAffine(k, rot, (length, length))
        img = cv2.filter2D(img, -1, k / max(float(k.sum()), 1e-6))
    level = rng.uniform(*noise)
    dark = 1.5 - np.clip(img.mean(axis=2, keepdims=True) / 255.0, 0, 1)
    img = img + rng.normal(0, 1, img.shape).astype(np.float32) * level * dark
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- VOC output
@dataclass(frozen=True)
class World:
    """A dataset family: its classes and a renderer of one image with its objects."""

    name: str
    classes: tuple[str, ...]
    render: Callable[[np.random.Generator], tuple[Image.Image, list[dict], int]]  # image, objects, JPEG quality
    description: str


JPEG = {"subsampling": 2, "optimize": True}   # with the world's quality per image
SMALL_PX = 16         # the share of objects whose longer box side is below this is reported


def generate(world: World, out_root: Path, n_images: int, seed: int, workers: int = 1) -> dict:
    """Write <out_root>/VOCdevkit/VOC2007/{Annotations,JPEGImages}/000001.{xml,jpg} ... and return
    counts and box-size statistics. Files of an earlier, larger run beyond n_images are removed so
    the folder holds exactly this dataset; other files are left alone. Each image depends on its
    index alone, so `workers` processes write the same bytes as one."""
    folders = voc_folders(out_root, n_images)
    counts = {"world": world.name, "seed": seed, "classes": list(world.classes), "images": n_images,
              "objects": 0, "per_class": {c: 0 for c in world.classes}, "empty": 0, "grayscale": 0,
              "truncated": 0}
    sides, at_320, areas = [], [], []
    _JOB.update(world=world, folders=folders, seed=seed)
    if workers > 1:
        # Forked workers inherit _JOB: the worlds' renderers are closures, which pickle cannot send.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            written = list(pool.map(_write_one, range(n_images), chunksize=4))
    else:
        written = [_write_one(i) for i in range(n_images)]
    for gray, size, objects in written:
        counts["objects"] += len(objects)
        counts["empty"] += not objects
        counts["grayscale"] += gray
        for o in objects:
            counts["per_class"][o["name"]] += 1
            counts["truncated"] += o["truncated"]
            x1, y1, x2, y2 = o["box"]
            w, h = x2 - x1 + 1, y2 - y1 + 1
            sides.append(max(w, h))
            at_320.append(max(w, h) * 320 / max(size))
            areas.append(w * h)
    counts["boxes"] = box_stats(np.array(sides, float), np.array(at_320, float), np.array(areas, float))
    return counts


_JOB: dict = {}   # the world, folders and seed generate() is writing


def _write_one(i: int) -> tuple[bool, tuple[int, int], list[dict]]:
    """Render and write image i of _JOB's world: (grey?, (width, height), objects)."""
    world, (ann_dir, img_dir), seed = _JOB["world"], _JOB["folders"], _JOB["seed"]
    img, objects, quality = world.render(np.random.default_rng([seed, i]))
    write_voc_item(ann_dir, img_dir, i, img, objects, {**JPEG, "quality": quality})
    return img.mode == "L", img.size, objects


def box_stats(sides: np.ndarray, at_320: np.ndarray, areas: np.ndarray) -> dict:
    """Box sizes of a dataset: the median longer side in the image and letterboxed to 320 px (the old
    default input), the share under SMALL_PX and the COCO size mix (area below 32² small, 96² large).
    sides, at_320, areas: [N] per object."""
    if not len(sides):
        return {"median_side_px": None, "median_side_at_320_px": None, f"share_side_under_{SMALL_PX}px": None,
                "coco_small_medium_large": None}
    share = lambda m: round(float(m.mean()), 3)  # noqa: E731
    return {"median_side_px": float(np.median(sides)), "median_side_at_320_px": round(float(np.median(at_320)), 1),
            f"share_side_under_{SMALL_PX}px": share(sides < SMALL_PX),
            "coco_small_medium_large": [share(areas < 32 ** 2), share((areas >= 32 ** 2) & (areas < 96 ** 2)),
                                        share(areas >= 96 ** 2)]}


def to_image(pixels: np.ndarray, gray: bool) -> Image.Image:
    """uint8 [H, W, 3] -> an RGB (or, for a grey camera, L) PIL image."""
    img = Image.fromarray(pixels, "RGB")
    return img.convert("L") if gray else img


def flat_layer(name: str | None, parts: list[tuple[list[np.ndarray], np.ndarray]], depth: float = 0.0,
               shadow: tuple[float, float, float, float] | None = None) -> Layer:
    """A layer of flat-coloured parts painted in order (later parts over earlier ones).

    parts: (polygons in image pixels, the first the outline and the rest holes; colour RGB 0-255);
    shadow: (dx, dy, strength, blur) of the silhouette's cast shadow."""
    pts = np.concatenate([p for polys, _ in parts for p in polys])
    x0, y0 = math.floor(pts[:, 0].min() - 1), math.floor(pts[:, 1].min() - 1)
    w, h = math.ceil(pts[:, 0].max() + 1) - x0, math.ceil(pts[:, 1].max() + 1) - y0
    rgb, alpha = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    for polys, colour in parts:
        a = coverage_on(polys, x0, y0, h, w)
        rgb = rgb * (1 - a[..., None]) + np.asarray(colour, np.float32) * a[..., None]
        alpha = alpha + a * (1 - alpha)
    # rgb holds colour x coverage over a black patch: divide it back out where anything covers
    rgb = rgb / np.maximum(alpha, 1e-6)[..., None]
    cast = None if shadow is None else (x0 + round(shadow[0]), y0 + round(shadow[1]), alpha, shadow[2], shadow[3])
    return Layer(name, x0, y0, rgb, alpha, depth, cast)


def place(polygon: np.ndarray, angle: float, cx: float, cy: float) -> np.ndarray:
    """Rotate a local outline [K, 2] by `angle` (radians) and move its origin to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    return polygon @ np.array([[c, s], [-s, c]]) + [cx, cy]
