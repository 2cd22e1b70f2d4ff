"""Synthetic VOC detection datasets: filled shapes on cluttered backgrounds, identical to the byte.

Two styles share one renderer:
- "shapes": the committed demo (classes circle, square, triangle, star on noise, gradients,
  blotches, thin lines and distractor marks).
- "alt": a held-out world for the generalisation check, never tuned on: other classes, other
  background families (stripes, checkers, fine grain), other object sizes and palette.

Image i comes from ``np.random.default_rng([seed, i])`` alone, so adding images never changes
earlier ones. Boxes are the visible pixel extent of each shape (alpha >= 0.5 and not covered by
a later shape), in VOC's 1-based inclusive coordinates. Bytes are reproducible for the same
numpy and Pillow versions (JPEG settings fixed, no metadata); other versions may differ slightly.
"""
from __future__ import annotations

import colorsys
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4          # shapes are rasterised at 4x and box-filtered: anti-aliased edges
VISIBLE_ALPHA = 0.5      # a pixel belongs to a shape's extent from this coverage on
MIN_VISIBLE = 0.5        # no shape loses more than half its area to the border or to others
DIFFICULT_PX = 12        # a box whose longer side is below this is marked difficult
# Fixed encoder settings so the same image always gives the same bytes (Pillow writes no dates).
JPEG_OPTIONS = {"quality": 78, "subsampling": 2, "optimize": True, "progressive": False}

Polygon = np.ndarray     # [K, 2] float (x, y), unit scale around the origin
ShapeFn = Callable[[np.random.Generator], tuple[Polygon, list[Polygon]]]  # outer, holes


# ----------------------------------------------------------------------------- shape outlines
def _regular(n: int, phase: float = 0.0) -> Polygon:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _circle(rng):
    return _regular(72), []


def _square(rng):
    return _regular(4, np.pi / 4) * math.sqrt(2) * 0.8, []


def _triangle(rng):
    # Shift down so the centroid, not the circumcentre, sits at the origin: looks balanced.
    return _regular(3, -np.pi / 2) + [0.0, 0.12], []


def _star(rng):
    inner = rng.uniform(0.38, 0.5)
    pts = _regular(10, -np.pi / 2)
    pts[1::2] *= inner
    return pts, []


def _hexagon(rng):
    return _regular(6), []


def _cross(rng):
    t = rng.uniform(0.26, 0.34)
    q = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t),
         (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)]
    return np.array(q, dtype=float), []


def _ring(rng):
    return _regular(72), [_regular(72) * rng.uniform(0.45, 0.6)]


def _arrow(rng):
    t, head, neck = rng.uniform(0.17, 0.24), rng.uniform(0.55, 0.65), rng.uniform(0.1, 0.3)
    q = [(-1, -t), (neck, -t), (neck, -head), (1, 0), (neck, head), (neck, t), (-1, t)]
    return np.array(q, dtype=float), []


def _ellipse(rng):
    return _regular(72) * [1.0, rng.uniform(0.45, 0.62)], []


# ----------------------------------------------------------------------------- palettes
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _vivid(rng) -> np.ndarray:
    """Saturated colours of any hue, now and then near-black or near-white."""
    if rng.random() < 0.12:
        return np.full(3, rng.choice([rng.uniform(10, 45), rng.uniform(215, 250)]))
    return _hsv(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0))


_EARTHY = np.array([(0, 128, 128), (204, 153, 51), (128, 0, 32), (181, 160, 214), (107, 120, 40),
                    (240, 128, 110), (20, 40, 100), (245, 235, 200), (90, 100, 115), (150, 230, 180)],
                   dtype=float)


def _earthy(rng) -> np.ndarray:
    """A fixed set of muted/pastel anchors, jittered: a colour world unlike the demo's."""
    return np.clip(_EARTHY[rng.integers(len(_EARTHY))] + rng.normal(0, 14, 3), 0, 255)


# ----------------------------------------------------------------------------- backgrounds
def _noise(rng, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise in [-1, 1] with features about `cell` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = Image.fromarray(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), "F")
    return np.asarray(grid.resize((w, h), Image.BICUBIC), dtype=np.float32)


def _gradient(rng, h: int, w: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(a) / w + yy * math.sin(a) / h
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c0 + (c1 - c0) * t[..., None]


def _dull(rng) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.85))


def _bg_textured(rng, h: int, w: int) -> np.ndarray:
    """Demo background: gradient + coarse and fine noise (luminance and a little chroma)."""
    img = _gradient(rng, h, w, _dull(rng), _dull(rng))
    img += rng.uniform(12, 35) * _noise(rng, h, w, rng.uniform(25, 80))[..., None]
    img += rng.uniform(4, 12) * np.stack([_noise(rng, h, w, rng.uniform(30, 60)) for _ in range(3)], -1)
    img += rng.uniform(2, 5) * _noise(rng, h, w, rng.uniform(2.5, 5))[..., None]
    return img


def _bg_stripes(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
    phase = (xx * math.cos(a) + yy * math.sin(a)) * 2 * np.pi / period
    wave = np.sin(phase) if rng.random() < 0.5 else np.sign(np.sin(phase))
    img = _gradient(rng, h, w, _earthy(rng) * 0.7 + 40, _dull(rng))
    return img + rng.uniform(12, 35) * wave[..., None]


def _bg_checker(rng, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cell = rng.uniform(8, 32)
    check = (((xx // cell) + (yy // cell)) % 2 * 2 - 1).astype(np.float32)
    img = _gradient(rng, h, w, _dull(rng), _earthy(rng) * 0.6 + 50)
    return img + rng.uniform(10, 30) * check[..., None]


def _bg_grain(rng, h: int, w: int) -> np.ndarray:
    img = _gradient(rng, h, w, _dull(rng), _dull(rng))
    img += rng.uniform(15, 30) * _noise(rng, h, w, rng.uniform(1.5, 3))[..., None]
    return img + rng.uniform(20, 45) * _noise(rng, h, w, rng.uniform(90, 160))[..., None]


# ----------------------------------------------------------------------------- clutter
def _rand_point(rng, w: int, h: int) -> tuple[float, float]:
    return float(rng.uniform(0, w)), float(rng.uniform(0, h))


def _blotches(rng, img: np.ndarray, n: int) -> np.ndarray:
    """Soft translucent stains of irregular outline (thresholded noise): large, low-contrast,
    edge-less — nothing like a class shape."""
    h, w = img.shape[:2]
    for _ in range(n):
        blob = _noise(rng, h, w, rng.uniform(25, 70))
        alpha = np.clip((blob - rng.uniform(0.35, 0.6)) * 4, 0, 1) * rng.uniform(0.2, 0.45)
        img = img * (1 - alpha[..., None]) + _dull(rng) * alpha[..., None]
    return img


def _lines(rng, draw: ImageDraw.ImageDraw, w: int, h: int, n: int, palette) -> None:
    for _ in range(n):
        draw.line([_rand_point(rng, w, h), _rand_point(rng, w, h)],
                  fill=tuple(int(c) for c in palette(rng)), width=int(rng.integers(1, 3)))


def _marks_shapes(rng, draw: ImageDraw.ImageDraw, w: int, h: int, n: int) -> None:
    """Thin crosses, squiggles, open arcs and long strokes: distractors that are no class."""
    for _ in range(n):
        x, y = _rand_point(rng, w, h)
        col = tuple(int(c) for c in _vivid(rng))
        kind, s = rng.integers(4), rng.uniform(6, 22)
        if kind == 0:
            a = rng.uniform(0, np.pi / 2)
            for b in (a, a + np.pi / 2):
                dx, dy = s * math.cos(b), s * math.sin(b)
                draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=col, width=int(rng.integers(1, 3)))
        elif kind == 1:
            pts = np.cumsum(rng.normal(0, s / 2, (int(rng.integers(4, 8)), 2)), 0) + [x, y]
            draw.line([tuple(p) for p in pts], fill=col, width=int(rng.integers(1, 4)))
        elif kind == 2:
            start = rng.uniform(0, 360)
            draw.arc([x - s, y - s, x + s, y + s], start, start + rng.uniform(60, 200), fill=col, width=2)
        else:
            a, length = rng.uniform(0, np.pi), rng.uniform(18, 50)
            dx, dy = length * math.cos(a), length * math.sin(a)
            draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=col, width=int(rng.integers(3, 6)))


def _marks_alt(rng, draw: ImageDraw.ImageDraw, w: int, h: int, n: int) -> None:
    """Dot clusters, dashes and sine wiggles."""
    for _ in range(n):
        x, y = _rand_point(rng, w, h)
        col = tuple(int(c) for c in _earthy(rng))
        kind = rng.integers(3)
        if kind == 0:
            for dx, dy in rng.normal(0, 8, (int(rng.integers(4, 12)), 2)):
                r = rng.uniform(1, 2.2)
                draw.ellipse([x + dx - r, y + dy - r, x + dx + r, y + dy + r], fill=col)
        elif kind == 1:
            a = rng.uniform(0, np.pi)
            for k in range(int(rng.integers(3, 7))):
                cx, cy = x + 9 * k * math.cos(a), y + 9 * k * math.sin(a)
                draw.line([(cx, cy), (cx + 5 * math.cos(a), cy + 5 * math.sin(a))], fill=col, width=2)
        else:
            t = np.linspace(0, rng.uniform(30, 70), 24)
            amp, per = rng.uniform(2, 6), rng.uniform(8, 16)
            draw.line([(x + u, y + amp * math.sin(u * 2 * np.pi / per)) for u in t], fill=col, width=2)


# ----------------------------------------------------------------------------- styles
@dataclass(frozen=True)
class Style:
    """Everything that differs between the demo world and the held-out one."""
    shapes: dict[str, ShapeFn]
    aspect_jitter: dict[str, float]       # max relative stretch per class (kept modest)
    backgrounds: tuple[Callable, ...]
    marks: Callable
    palette: Callable
    object_frac: tuple[float, float]      # object size / image short side, log-uniform
    object_px: tuple[float, float]        # clamp of that size in pixels
    objects: tuple[int, int] = (1, 6)
    p_gray: float = 0.10
    p_empty: float = 0.08
    p_tiny: float = 0.07
    p_outline: float = 0.3
    p_truncate: float = 0.15
    clutter: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.shapes)


STYLES: dict[str, Style] = {
    "shapes": Style(
        shapes={"circle": _circle, "square": _square, "triangle": _triangle, "star": _star},
        aspect_jitter={"circle": 0.1, "square": 0.12, "triangle": 0.12, "star": 0.1},
        backgrounds=(_bg_textured,), marks=_marks_shapes, palette=_vivid,
        object_frac=(0.08, 0.36), object_px=(16, 110),
        clutter={"blotches": (2, 7), "lines": (2, 9), "marks": (2, 7)}),
    "alt": Style(
        shapes={"hexagon": _hexagon, "cross": _cross, "ring": _ring, "arrow": _arrow, "ellipse": _ellipse},
        aspect_jitter={"hexagon": 0.08, "cross": 0.1, "ring": 0.08, "arrow": 0.1, "ellipse": 0.05},
        backgrounds=(_bg_stripes, _bg_checker, _bg_grain), marks=_marks_alt, palette=_earthy,
        object_frac=(0.1, 0.42), object_px=(20, 150), objects=(1, 5),
        clutter={"blotches": (0, 3), "lines": (1, 5), "marks": (3, 9)}),
}


def style_classes(style: str) -> list[str]:
    """Class names of `style`, in label order (what goes into params.yaml data.classes)."""
    return _style(style).classes


def _style(style: str) -> Style:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {sorted(STYLES)}")
    return STYLES[style]


# ----------------------------------------------------------------------------- rendering
@dataclass
class _Placed:
    name: str
    area: int                      # pixels of the whole shape, also those beyond the border
    region: tuple[slice, slice]    # the part of the image its patch covers
    truncated: bool


def _pose(rng, style: Style, name: str, r: float, cx: float, cy: float) -> list[Polygon]:
    """The class outline, modestly stretched, rotated, scaled to radius r and moved to (cx, cy)."""
    outer, holes = style.shapes[name](rng)
    j = style.aspect_jitter[name]
    stretch = math.exp(rng.uniform(-j, j))
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return [(p * [stretch, 1 / stretch]) @ rot.T * r + [cx, cy] for p in [outer, *holes]]


def _rasterise(polys: list[Polygon], stroke: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Coverage in [0, 1] of the fill and of the outline stroke on a patch at (x0, y0)."""
    pts = np.concatenate(polys)
    pad = stroke + 2
    x0, y0 = math.floor(pts[:, 0].min() - pad), math.floor(pts[:, 1].min() - pad)
    pw, ph = math.ceil(pts[:, 0].max() + pad) - x0, math.ceil(pts[:, 1].max() + pad) - y0
    s = SUPERSAMPLE
    big = [[tuple(v) for v in (p - [x0, y0]) * s] for p in polys]
    fill, line = Image.new("L", (pw * s, ph * s), 0), Image.new("L", (pw * s, ph * s), 0)
    df, dl = ImageDraw.Draw(fill), ImageDraw.Draw(line)
    for k, p in enumerate(big):
        df.polygon(p, fill=0 if k else 255)          # later polygons are holes
        if stroke > 0:
            dl.line(p + [p[0]], fill=255, width=max(1, round(stroke * s)), joint="curve")

    def down(im: Image.Image) -> np.ndarray:
        return np.asarray(im, np.float32).reshape(ph, s, pw, s).mean(axis=(1, 3)) / 255.0
    return x0, y0, down(fill), down(line)


def _clip(x0: int, y0: int, shape: tuple[int, int], h: int, w: int):
    """Image slices and matching patch slices of a patch at (x0, y0), or None when outside."""
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + shape[1], w), min(y0 + shape[0], h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    return ((slice(iy0, iy1), slice(ix0, ix1)),
            (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0)))


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def _pick_colour(rng, style: Style, under: np.ndarray, gray: bool) -> np.ndarray:
    """A palette colour that stands out from the mean of the pixels it will cover."""
    bg = under.reshape(-1, 3).mean(axis=0)
    for _ in range(12):
        c = style.palette(rng)
        if (abs(_luma(c) - _luma(bg)) >= 50) if gray else (np.linalg.norm(c - bg) >= 90):
            return c
    return np.full(3, 25.0 if _luma(bg) > 128 else 235.0) + rng.uniform(-10, 10, 3)


def _centre(rng, style: Style, r: float, w: int, h: int) -> tuple[float, float]:
    """Inside the image, or (sometimes) straddling one border so the shape is cut."""
    def inside(n: int) -> float:
        return float(rng.uniform(r, n - r)) if n > 2 * r else n / 2
    cx, cy = inside(w), inside(h)
    if rng.random() < style.p_truncate:
        off = rng.uniform(-0.35, 0.35) * r
        side = int(rng.integers(4))
        cx = [off, w - off, cx, cx][side]
        cy = [cy, cy, off, h - off][side]
    return cx, cy


def _try_object(rng, style: Style, canvas: np.ndarray, owner: np.ndarray,
                placed: list[_Placed], gray: bool) -> _Placed | None:
    """Draw one random object if it hides no more than half of itself or of any other."""
    h, w = owner.shape
    name = style.classes[int(rng.integers(len(style.classes)))]
    if rng.random() < style.p_tiny:
        size = rng.uniform(7, 11.5)
    else:
        lo, hi = style.object_frac
        size = float(np.clip(math.exp(rng.uniform(math.log(lo), math.log(hi))) * min(h, w), *style.object_px))
    stroke = rng.uniform(1, 3) if size >= 20 and rng.random() < style.p_outline else 0.0
    cx, cy = _centre(rng, style, size / 2, w, h)
    x0, y0, fill, line = _rasterise(_pose(rng, style, name, size / 2, cx, cy), stroke)
    solid = np.maximum(fill, line) >= VISIBLE_ALPHA
    clip = _clip(x0, y0, fill.shape, h, w)
    if clip is None or not solid.any():
        return None
    region, patch = clip
    k = len(placed)
    trial = owner.copy()
    trial[region][solid[patch]] = k
    visible = np.bincount(trial.ravel() + 1, minlength=k + 2)[1:]
    areas = [p.area for p in placed] + [int(solid.sum())]
    if any(v < MIN_VISIBLE * a for v, a in zip(visible, areas)):
        return None
    _paint(rng, style, canvas[region], fill[patch], line[patch], solid[patch], gray)
    owner[...] = trial
    return _Placed(name, areas[-1], region, bool(solid[patch].sum() < areas[-1]))


def _paint(rng, style: Style, under: np.ndarray, fill: np.ndarray, line: np.ndarray,
           solid: np.ndarray, gray: bool) -> None:
    """Composite a gently shaded fill and an optional contrasting outline in place."""
    colour = _pick_colour(rng, style, under[solid], gray)
    ph, pw = fill.shape
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    ramp = (xx * math.cos(a) + yy * math.sin(a)) / max(ph, pw, 1)
    shaded = colour + rng.uniform(0, 30) * (ramp - ramp.mean())[..., None]
    under[...] = under * (1 - fill[..., None]) + shaded * fill[..., None]
    if line.any():
        edge = np.where(colour.mean() > 110, colour * 0.35, np.minimum(colour + 110, 255))
        under[...] = under * (1 - line[..., None]) + edge * line[..., None]


def _background(rng, style: Style, h: int, w: int) -> Image.Image:
    bg = style.backgrounds[int(rng.integers(len(style.backgrounds)))](rng, h, w)
    lo, hi = style.clutter.get("blotches", (0, 0))
    bg = _blotches(rng, bg, int(rng.integers(lo, hi + 1)))
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    lo, hi = style.clutter.get("lines", (0, 0))
    _lines(rng, draw, w, h, int(rng.integers(lo, hi + 1)), style.palette)
    lo, hi = style.clutter.get("marks", (0, 0))
    style.marks(rng, draw, w, h, int(rng.integers(lo, hi + 1)))
    return img


def _box(owner: np.ndarray, k: int, region: tuple[slice, slice]) -> tuple[int, int, int, int]:
    """Tight 1-based inclusive VOC box of the pixels object k shows."""
    ys, xs = np.nonzero(owner[region] == k)
    oy, ox = region[0].start, region[1].start
    return int(xs.min() + ox + 1), int(ys.min() + oy + 1), int(xs.max() + ox + 1), int(ys.max() + oy + 1)


def render(rng: np.random.Generator, style: str | Style, min_size: int = 160,
           max_size: int = 400) -> tuple[Image.Image, list[dict]]:
    """One image (mode RGB or L) and its objects: name, box (VOC), truncated, difficult."""
    st = _style(style) if isinstance(style, str) else style
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    gray = bool(rng.random() < st.p_gray)
    n = 0 if rng.random() < st.p_empty else int(rng.integers(st.objects[0], st.objects[1] + 1))
    canvas = np.asarray(_background(rng, st, h, w), np.float32).copy()
    owner = np.full((h, w), -1, np.int16)
    placed: list[_Placed] = []
    for _ in range(n):
        for _attempt in range(30):
            obj = _try_object(rng, st, canvas, owner, placed, gray)
            if obj is not None:
                placed.append(obj)
                break
    canvas += rng.normal(0, rng.uniform(0.5, 1.5), canvas.shape).astype(np.float32)
    img = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    if gray:
        img = img.convert("L")
    objects = []
    for k, p in enumerate(placed):
        box = _box(owner, k, p.region)
        longer = max(box[2] - box[0], box[3] - box[1]) + 1
        objects.append({"name": p.name, "box": box, "truncated": p.truncated,
                        "difficult": longer < DIFFICULT_PX})
    return img, objects


# ----------------------------------------------------------------------------- VOC files
def voc_xml(filename: str, width: int, height: int, depth: int, objects: list[dict]) -> str:
    """labelImg-style Pascal VOC annotation text."""
    parts = ["<annotation>", "\t<folder>VOC2007</folder>", f"\t<filename>{escape(filename)}</filename>",
             "\t<source>", "\t\t<database>detpipe synthetic</database>", "\t</source>",
             "\t<size>", f"\t\t<width>{width}</width>", f"\t\t<height>{height}</height>",
             f"\t\t<depth>{depth}</depth>", "\t</size>", "\t<segmented>0</segmented>"]
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        parts += ["\t<object>", f"\t\t<name>{escape(o['name'])}</name>", "\t\t<pose>Unspecified</pose>",
                  f"\t\t<truncated>{int(o['truncated'])}</truncated>",
                  f"\t\t<difficult>{int(o['difficult'])}</difficult>", "\t\t<bndbox>",
                  f"\t\t\t<xmin>{x1}</xmin>", f"\t\t\t<ymin>{y1}</ymin>",
                  f"\t\t\t<xmax>{x2}</xmax>", f"\t\t\t<ymax>{y2}</ymax>", "\t\t</bndbox>", "\t</object>"]
    return "\n".join(parts + ["</annotation>", ""])


_GENERATED = re.compile(r"^(\d{6})\.(jpg|xml)$")


def voc_folders(out_root: Path, n_images: int) -> tuple[Path, Path]:
    """Make <out_root>/VOCdevkit/VOC2007/{Annotations,JPEGImages} and remove the generated files of
    an earlier, larger run beyond n_images (other files are left); returns the two folders."""
    voc = Path(out_root) / "VOCdevkit" / "VOC2007"
    ann_dir, img_dir = voc / "Annotations", voc / "JPEGImages"
    for d in (ann_dir, img_dir):
        d.mkdir(parents=True, exist_ok=True)
        for f in d.iterdir():
            m = _GENERATED.match(f.name)
            if m and int(m.group(1)) > n_images:
                f.unlink()
    return ann_dir, img_dir


def print_written(out_root: Path, counts: dict, classes, what: str = "") -> None:
    """What a generator script prints: the counts as JSON, the folder and the params to use it."""
    print(json.dumps(counts, indent=2))
    root = Path(out_root) / "VOCdevkit" / "VOC2007"
    print(f"wrote {root}{f' ({what})' if what else ''}\nparams.yaml: data.root: {root.as_posix()}\n"
          f"             data.classes: [{', '.join(classes)}]")


def write_voc_item(ann_dir: Path, img_dir: Path, index: int, img: Image.Image, objects: list[dict],
                   jpeg: dict) -> None:
    """Image `index` (0-based) as <index + 1:06d>.jpg with its VOC file; jpeg: Pillow's save options."""
    stem = f"{index + 1:06d}"
    img.save(img_dir / f"{stem}.jpg", "JPEG", **jpeg)
    xml = voc_xml(f"{stem}.jpg", img.width, img.height, 1 if img.mode == "L" else 3, objects)
    (ann_dir / f"{stem}.xml").write_text(xml, encoding="utf-8")


def generate(out_root: Path, n_images: int, seed: int, style: str = "shapes",
             min_size: int = 160, max_size: int = 400) -> dict:
    """Write <out_root>/VOCdevkit/VOC2007/{Annotations,JPEGImages}/000001.{xml,jpg} ... and
    return the counts. Same arguments, same bytes; earlier generated files beyond n_images
    are removed so the folder holds exactly this dataset's images (other files are left)."""
    st = _style(style)
    if not 1 <= min_size <= max_size:
        raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    ann_dir, img_dir = voc_folders(out_root, n_images)
    counts = {"style": style, "seed": seed, "classes": st.classes, "images": n_images, "objects": 0,
              "per_class": {c: 0 for c in st.classes}, "difficult": 0, "truncated": 0,
              "empty": 0, "grayscale": 0}
    for i in range(n_images):
        img, objects = render(np.random.default_rng([seed, i]), st, min_size, max_size)
        write_voc_item(ann_dir, img_dir, i, img, objects, JPEG_OPTIONS)
        counts["objects"] += len(objects)
        counts["empty"] += not objects
        counts["grayscale"] += img.mode == "L"
        for o in objects:
            counts["per_class"][o["name"]] += 1
            counts["difficult"] += o["difficult"]
            counts["truncated"] += o["truncated"]
    return counts
