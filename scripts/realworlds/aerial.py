"""The "aerial" world: many objects under 16 pixels seen from above, on cluttered terrain.

Classes: car (7-11 px long, windscreen and rear window), truck (11-16 px, cab and trailer), boat
(8-15 px, pointed hull and cabin, on water with a wake) and plane (11-16 px wingspan). They sit
where they would: cars along roads and in parking lots, boats on water, planes on aprons, a few
anywhere. The clutter is made of things of the same size: trees, sheds, containers, roof details,
lane markings. 448-640 px images, 15-70 objects each, soft shadows from one sun per image, haze,
blur, sensor noise and JPEG quality 55-90. Letterboxed to 320 px an object is 4-10 px: the demo
model's input size and strides were never tuned for this.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .common import (World, blend, camera, composite, flat_layer, fractal_noise, hsv, place,
                     polygon_coverage, to_image, value_noise)

CLASSES = ("car", "truck", "boat", "plane")
MAX_OBJECTS = 70            # the predict stage keeps 100 boxes per image
P_GRAY = 0.05


# ----------------------------------------------------------------------------- object outlines
def _rect(x0: float, y0: float, x1: float, y1: float, cut: float = 0.0) -> np.ndarray:
    """Axis-aligned rectangle, corners chamfered by `cut`."""
    if cut <= 0:
        return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)
    return np.array([(x0 + cut, y0), (x1 - cut, y0), (x1, y0 + cut), (x1, y1 - cut), (x1 - cut, y1),
                     (x0 + cut, y1), (x0, y1 - cut), (x0, y0 + cut)], float)


def _vehicle_colour(rng) -> np.ndarray:
    """Cars are mostly white, black, grey or silver; some red, blue and others."""
    r = rng.random()
    if r < 0.55:
        return np.full(3, rng.choice([rng.uniform(195, 245), rng.uniform(20, 60), rng.uniform(90, 170)]))
    return hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.9))


def _car(rng, length: float) -> list:
    w = length * rng.uniform(0.44, 0.52)
    body = _vehicle_colour(rng)
    glass = np.full(3, rng.uniform(15, 55))
    roof = np.clip(body * rng.uniform(0.85, 1.15), 0, 255)
    h, q = length / 2, w / 2
    return [([_rect(-h, -q, h, q, w * 0.28)], body),
            ([_rect(h * 0.15, -q * 0.8, h * 0.5, q * 0.8)], glass),      # windscreen (front is +x)
            ([_rect(-h * 0.72, -q * 0.75, -h * 0.5, q * 0.75)], glass),  # rear window
            ([_rect(-h * 0.5, -q * 0.72, h * 0.15, q * 0.72)], roof)]


def _truck(rng, length: float) -> list:
    w = length * rng.uniform(0.26, 0.33)
    h, q = length / 2, w / 2
    split = h - length * rng.uniform(0.2, 0.27)
    cab, trailer = _vehicle_colour(rng), np.full(3, rng.uniform(150, 245)) if rng.random() < 0.6 else \
        hsv(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.4, 0.9))
    parts = [([_rect(-h, -q, split - 0.6, q)], trailer),
             ([_rect(split + 0.4, -q * 0.9, h, q * 0.9, w * 0.15)], cab),
             ([_rect(h - length * 0.08, -q * 0.75, h - length * 0.03, q * 0.75)], np.full(3, 30.0))]
    ribs = np.clip(trailer * 0.8, 0, 255)
    for x in np.linspace(-h + 1.5, split - 2, int(rng.integers(2, 5))):
        parts.append(([_rect(x, -q, x + 0.5, q)], ribs))
    return parts


def _boat(rng, length: float) -> list:
    w = length * rng.uniform(0.3, 0.4)
    h, q = length / 2, w / 2
    hull = np.full(3, rng.uniform(200, 250)) if rng.random() < 0.7 else _vehicle_colour(rng)
    bow = np.array([(-h, -q * 0.8), (h * 0.35, -q), (h, 0), (h * 0.35, q), (-h, q * 0.8)], float)
    cabin = hsv(rng.choice([0.58, 0.6, 0.0, 0.1]), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.7))
    return [([bow], hull), ([_rect(-h * 0.45, -q * 0.5, h * 0.15, q * 0.5)], cabin),
            ([_rect(-h * 0.95, -q * 0.5, -h * 0.75, q * 0.5)], np.clip(hull * 0.7, 0, 255))]


def _plane(rng, span: float) -> list:
    body = np.full(3, rng.uniform(185, 245))
    length, f = span * rng.uniform(0.8, 1.0), span * rng.uniform(0.08, 0.11)
    sweep, chord = span * rng.uniform(0.05, 0.15), span * rng.uniform(0.14, 0.2)
    h = length / 2
    fuselage = np.array([(-h, -f / 2), (h * 0.8, -f / 2), (h, 0), (h * 0.8, f / 2), (-h, f / 2)], float)
    wings = np.array([(chord * 0.6, -f / 2), (chord * 0.6 - sweep, -span / 2), (-sweep, -span / 2),
                      (-chord * 0.2, -f / 2), (-chord * 0.2, f / 2), (-sweep, span / 2),
                      (chord * 0.6 - sweep, span / 2), (chord * 0.6, f / 2)], float)
    tail_span = span * rng.uniform(0.3, 0.4)
    tail = np.array([(-h * 0.72, -f / 2), (-h * 0.95, -tail_span / 2), (-h, -tail_span / 2), (-h, tail_span / 2),
                     (-h * 0.95, tail_span / 2), (-h * 0.72, f / 2)], float)
    stripe = hsv(rng.random(), 0.7, 0.6) if rng.random() < 0.5 else body * 0.8
    return [([wings], np.clip(body * 0.93, 0, 255)), ([tail], body), ([fuselage], body),
            ([_rect(-h * 0.3, -f * 0.25, h * 0.6, f * 0.25)], stripe)]


SHAPES = {"car": (_car, (7.0, 11.0)), "truck": (_truck, (11.0, 16.0)), "boat": (_boat, (8.0, 15.0)),
          "plane": (_plane, (11.0, 16.0))}


# ----------------------------------------------------------------------------- terrain
def _terrain(rng, h: int, w: int) -> np.ndarray:
    grass = np.array([rng.uniform(60, 100), rng.uniform(90, 130), rng.uniform(40, 70)])
    soil = np.array([rng.uniform(120, 160), rng.uniform(100, 130), rng.uniform(70, 95)])
    t = np.clip(0.5 + fractal_noise(rng, h, w, rng.uniform(60, 160)), 0, 1)[..., None]
    img = grass * (1 - t) + soil * t
    return (img + 22 * fractal_noise(rng, h, w, 6, 2)[..., None]).astype(np.float32)


def _fields(rng, img: np.ndarray, n: int) -> None:
    h, w = img.shape[:2]
    for _ in range(n):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        fw, fh, a = rng.uniform(80, 260), rng.uniform(60, 200), rng.uniform(0, np.pi)
        x0, y0, cov = polygon_coverage([place(_rect(-fw / 2, -fh / 2, fw / 2, fh / 2), a, cx, cy)])
        tone = np.array([rng.uniform(70, 190), rng.uniform(90, 180), rng.uniform(40, 110)])
        ph, pw = cov.shape
        yy, xx = np.mgrid[0:ph, 0:pw]
        rows = 0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * np.pi / rng.uniform(3, 7))
        patch = tone + (rows * rng.uniform(5, 25))[..., None]
        blend(img, patch.astype(np.float32), cov * rng.uniform(0.6, 0.95), x0, y0)


def _water(rng, img: np.ndarray) -> np.ndarray:
    """A lake or river; returns its mask."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        mask = fractal_noise(rng, h, w, rng.uniform(120, 220)) > rng.uniform(0.05, 0.3)
    else:
        mask = np.zeros((h, w), np.uint8)
        pts = _polyline(rng, h, w)
        cv2.polylines(mask, [pts.astype(np.int32)], False, 1, int(rng.uniform(40, 110)))
        mask = mask > 0
    colour = np.array([rng.uniform(30, 70), rng.uniform(60, 95), rng.uniform(80, 120)])
    ripple = colour + 10 * value_noise(rng, h, w, 4)[..., None]
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.0)
    img[...] = img * (1 - soft[..., None]) + ripple * soft[..., None]
    return cv2.erode(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0


def _polyline(rng, h: int, w: int) -> np.ndarray:
    """A gently curving line across the image, [K, 2] float."""
    a = rng.uniform(0, np.pi)
    d = np.array([math.cos(a), math.sin(a)])
    c = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    t = np.linspace(-1, 1, 24)[:, None] * (h + w)
    bend = np.sin(np.linspace(0, rng.uniform(0, 3), 24))[:, None] * rng.uniform(0, 60) * d[::-1] * [1, -1]
    return c + t * d + bend


def _roads(rng, img: np.ndarray, n: int) -> tuple[list[tuple[np.ndarray, float]], np.ndarray]:
    """Draw n roads; return (centre line points, width) of each for placing vehicles, and where they are."""
    roads, everywhere = [], np.zeros(img.shape[:2], np.uint8)
    for _ in range(n):
        pts, width = _polyline(rng, *img.shape[:2]), rng.uniform(9, 16)
        mask = np.zeros(img.shape[:2], np.uint8)
        cv2.polylines(mask, [np.round(pts * 4).astype(np.int32)], False, 255, int(width), cv2.LINE_AA, 2)
        everywhere |= mask
        asphalt = np.full(3, rng.uniform(65, 115)) + rng.uniform(-8, 8, 3)
        blend(img, asphalt, mask.astype(np.float32) / 255, 0, 0)
        dash = np.zeros(img.shape[:2], np.uint8)
        seg = pts[::2]
        for a, b in zip(seg[:-1], seg[1:]):
            m = a + (b - a) * 0.45
            cv2.line(dash, tuple(np.round(a * 4).astype(int)), tuple(np.round(m * 4).astype(int)), 255, 1,
                     cv2.LINE_AA, 2)
        blend(img, (230.0, 225.0, 200.0), dash.astype(np.float32) / 255 * 0.7, 0, 0)
        roads.append((pts, width))
    return roads, cv2.dilate(everywhere, np.ones((15, 15), np.uint8)) > 0


def _building(rng, cx: float, cy: float, size: tuple[float, float], angle: float, sun: tuple) -> object:
    bw, bh = (rng.uniform(*size) for _ in range(2))
    roof = np.full(3, rng.uniform(90, 200)) if rng.random() < 0.5 else \
        hsv(rng.uniform(0.0, 0.08), rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.75))
    parts = [([place(_rect(-bw / 2, -bh / 2, bw / 2, bh / 2), angle, cx, cy)], roof),
             ([place(_rect(-bw / 2, -bh / 2, bw / 2, 0), angle, cx, cy)], np.clip(roof * 0.8, 0, 255))]
    return flat_layer(None, parts, depth=-1, shadow=(sun[0] * 3, sun[1] * 3, 0.5, 1.2))


def _trees(rng, cx: float, cy: float, n: int, sun: tuple) -> list:
    out = []
    for _ in range(n):
        x, y, r = cx + rng.normal(0, 18), cy + rng.normal(0, 18), rng.uniform(2.5, 7)
        green = np.array([rng.uniform(20, 60), rng.uniform(50, 95), rng.uniform(20, 45)])
        disc = place(np.stack([np.cos(np.linspace(0, 2 * np.pi, 16)), np.sin(np.linspace(0, 2 * np.pi, 16))], 1)
                     * r * rng.uniform(0.8, 1.2, 2), rng.uniform(0, np.pi), x, y)
        light = place(np.stack([np.cos(np.linspace(0, 2 * np.pi, 12)), np.sin(np.linspace(0, 2 * np.pi, 12))], 1)
                      * r * 0.45, 0, x - sun[0] * r * 0.3, y - sun[1] * r * 0.3)
        out.append(flat_layer(None, [([disc], green), ([light], np.clip(green * 1.35, 0, 255))], depth=1,
                              shadow=(sun[0] * r * 0.6, sun[1] * r * 0.6, 0.45, 1.0)))
    return out


# ----------------------------------------------------------------------------- placing objects
class _Placer:
    """Objects and look-alike clutter at free spots (no two overlap)."""

    def __init__(self, rng, h: int, w: int, sun: tuple) -> None:
        self.rng, self.h, self.w, self.sun = rng, h, w, sun
        self.taken = np.zeros((h, w), bool)
        self.layers: list = []
        self.count = 0

    def add(self, name: str | None, shape, size: float, angle: float, cx: float, cy: float) -> bool:
        """Put one object (name None: clutter drawn with the object's own shape) if its spot is free."""
        if name is not None and self.count >= MAX_OBJECTS:
            return False
        parts = [([place(p, angle, cx, cy) for p in polys], colour) for polys, colour in shape(self.rng, size)]
        layer = flat_layer(name, parts, depth=2, shadow=(self.sun[0] * 1.6, self.sun[1] * 1.6, 0.5, 0.7))
        ys, xs = np.nonzero(layer.alpha >= 0.2)
        ys, xs = ys + layer.y0, xs + layer.x0
        inside = (ys >= 0) & (ys < self.h) & (xs >= 0) & (xs < self.w)
        if inside.mean() < 0.6 or self.taken[ys[inside], xs[inside]].any():
            return False
        self.taken[np.clip(ys - 1, 0, self.h - 1), xs.clip(0, self.w - 1)] = True
        self.taken[np.clip(ys + 1, 0, self.h - 1), xs.clip(0, self.w - 1)] = True
        self.taken[ys[inside], xs[inside]] = True
        self.layers.append(layer)
        self.count += name is not None
        return True

    def vehicle(self, name: str, cx: float, cy: float, angle: float) -> bool:
        shape, (lo, hi) = SHAPES[name]
        return self.add(name, shape, self.rng.uniform(lo, hi), angle, cx, cy)


def _along_roads(p: _Placer, roads: list) -> None:
    rng = p.rng
    for pts, width in roads:
        seg = np.diff(pts, axis=0)
        lengths = np.hypot(*seg.T)
        for _ in range(int(rng.integers(5, 26))):
            i = int(rng.choice(len(seg), p=lengths / lengths.sum()))
            t = rng.random()
            d = seg[i] / max(lengths[i], 1e-6)
            lane = rng.choice([-1, 1])
            cx, cy = pts[i] + t * seg[i] + lane * d[::-1] * [-1, 1] * width * 0.25
            angle = math.atan2(d[1], d[0]) + (np.pi if lane > 0 else 0) + rng.normal(0, 0.05)
            p.vehicle("truck" if rng.random() < 0.25 else "car", cx, cy, angle)


def _parking(p: _Placer, img: np.ndarray) -> None:
    rng = p.rng
    pw, ph = rng.uniform(90, 220), rng.uniform(60, 150)
    cx, cy, a = rng.uniform(0.2, 0.8) * p.w, rng.uniform(0.2, 0.8) * p.h, rng.choice([0, np.pi / 2]) + rng.normal(0, 0.3)
    x0, y0, cov = polygon_coverage([place(_rect(-pw / 2, -ph / 2, pw / 2, ph / 2), a, cx, cy)])
    blend(img, np.full(3, rng.uniform(80, 125)), cov, x0, y0)
    stall = rng.uniform(6.5, 8.0)
    full = rng.uniform(0.4, 0.9)
    marks = np.zeros(img.shape[:2], np.uint8)   # every stall line, painted once (one blend, not one a stall)
    for row in np.arange(-ph / 2 + 8, ph / 2 - 6, 16):
        for col in np.arange(-pw / 2 + stall / 2, pw / 2 - stall / 2, stall):
            x1, y1 = place(np.array([[col - stall / 2, row - 7], [col - stall / 2, row + 7]]), a, cx, cy)
            cv2.line(marks, tuple(np.round(x1 * 4).astype(int)), tuple(np.round(y1 * 4).astype(int)), 255, 1,
                     cv2.LINE_AA, 2)
            if rng.random() < full:
                (x, y), = place(np.array([[col, row]]), a, cx, cy)
                p.vehicle("truck" if rng.random() < 0.08 else "car", x, y, a + np.pi / 2 + rng.choice([0, np.pi])
                          + rng.normal(0, 0.06))
    blend(img, (225.0, 225.0, 215.0), marks.astype(np.float32) / 255 * 0.6, 0, 0)


def _on_water(p: _Placer, img: np.ndarray, water: np.ndarray) -> None:
    rng = p.rng
    ys, xs = np.nonzero(water)
    if not len(ys):
        return
    for _ in range(int(rng.integers(3, 16))):
        k = int(rng.integers(len(ys)))
        cx, cy, a = float(xs[k]), float(ys[k]), rng.uniform(0, 2 * np.pi)
        if p.vehicle("boat", cx, cy, a) and rng.random() < 0.7:  # a wake behind the stern
            d = np.array([math.cos(a), math.sin(a)])
            wake = np.zeros(img.shape[:2], np.uint8)
            tail = np.array([cx, cy]) - d * rng.uniform(20, 45)
            for side in (-1, 1):
                end = tail + side * d[::-1] * [-1, 1] * rng.uniform(5, 12)
                start = np.array([cx, cy]) - d * 6
                cv2.line(wake, tuple(np.round(start * 4).astype(int)), tuple(np.round(end * 4).astype(int)), 255, 2,
                         cv2.LINE_AA, 2)
            blend(img, (215.0, 225.0, 230.0), cv2.GaussianBlur(wake.astype(np.float32) / 255, (0, 0), 1.0) * 0.6, 0, 0)


def _apron(p: _Placer, img: np.ndarray) -> None:
    rng = p.rng
    aw, ah = rng.uniform(140, 300), rng.uniform(70, 160)
    cx, cy, a = rng.uniform(0.25, 0.75) * p.w, rng.uniform(0.25, 0.75) * p.h, rng.uniform(0, np.pi)
    x0, y0, cov = polygon_coverage([place(_rect(-aw / 2, -ah / 2, aw / 2, ah / 2), a, cx, cy)])
    blend(img, np.full(3, rng.uniform(150, 200)), cov, x0, y0)
    heading = a + rng.choice([np.pi / 2, -np.pi / 2])
    for _ in range(int(rng.integers(3, 13))):
        (x, y), = place(np.array([[rng.uniform(-aw / 2, aw / 2), rng.uniform(-ah / 2, ah / 2)]]), a, cx, cy)
        p.vehicle("plane", x, y, heading + rng.normal(0, 0.4))


def _scattered(p: _Placer, water: np.ndarray | None) -> None:
    """A few objects off the roads (cars in yards, a light plane on a field) and same-size clutter."""
    rng = p.rng
    for _ in range(int(rng.integers(1, 8))):
        x, y = rng.uniform(0, p.w), rng.uniform(0, p.h)
        if water is None or not water[int(y), int(x)]:
            p.vehicle(str(rng.choice(["car", "car", "truck", "plane"])), x, y, rng.uniform(0, 2 * np.pi))
    for _ in range(int(rng.integers(5, 20))):   # sheds and containers: boxes of vehicle size
        sz = rng.uniform(6, 15)

        def shed(r, size, ratio=rng.uniform(1, 2.6)):
            colour = hsv(r.random(), r.uniform(0.1, 0.7), r.uniform(0.3, 0.9))
            return [([_rect(-size / 2, -size / 2 / ratio, size / 2, size / 2 / ratio)], colour)]
        p.add(None, shed, sz, rng.uniform(0, np.pi), rng.uniform(0, p.w), rng.uniform(0, p.h))


# ----------------------------------------------------------------------------- one image
def render(rng: np.random.Generator):
    """One aerial image, its objects (VOC boxes) and its JPEG quality."""
    w, h = (int(v) for v in rng.integers(448, 641, 2))
    a = rng.uniform(0, 2 * np.pi)
    sun = (math.cos(a), math.sin(a))
    img = _terrain(rng, h, w)
    _fields(rng, img, int(rng.integers(0, 5)))
    water = _water(rng, img) if rng.random() < 0.6 else None
    roads, paved = _roads(rng, img, int(rng.integers(1, 4)))
    if water is not None:
        water &= ~paved  # bridges carry cars, not boats
    p = _Placer(rng, h, w, sun)
    for _ in range(int(rng.integers(3, 16))):
        layer = _building(rng, rng.uniform(0, w), rng.uniform(0, h), (15, 60), rng.uniform(0, np.pi), sun)
        layer_mask = layer.alpha > 0.2
        ys, xs = np.nonzero(layer_mask)
        ys, xs = ys + layer.y0, xs + layer.x0
        ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        if water is not None and water[ys[ok], xs[ok]].any():
            continue
        p.taken[ys[ok], xs[ok]] = True
        p.layers.append(layer)
    for _ in range(int(rng.integers(1, 6))):
        p.layers += _trees(rng, rng.uniform(0, w), rng.uniform(0, h), int(rng.integers(4, 25)), sun)
    for _ in range(int(rng.random() < 0.6) + int(rng.random() < 0.25)):
        _parking(p, img)
    if water is not None:
        _on_water(p, img, water)
    if rng.random() < 0.5:
        _apron(p, img)
    _along_roads(p, roads)
    _scattered(p, water)
    objects = composite(img, p.layers, min_visible=0.6)
    haze = rng.uniform(0, 0.25)
    img = img * (1 - haze) + np.array([200, 205, 215], np.float32) * haze
    t = fractal_noise(rng, h, w, max(h, w), 1)[..., None]
    img = img * (1 + 0.15 * t)
    gray = bool(rng.random() < P_GRAY)
    # no motion blur: a few pixels of it erase an 8 px car (a label nobody could check)
    pixels = camera(rng, img, blur=(0.2, 0.8), noise=(1.5, 5.0))
    return to_image(pixels, gray), objects, int(rng.integers(55, 91))


WORLD = World("aerial", CLASSES, render, __doc__.split("\n")[0])
