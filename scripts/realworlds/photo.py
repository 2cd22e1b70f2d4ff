"""The photo-like worlds: shaded solids on floors, tables and lawns, as a cheap camera sees them.

"photo" (classes ball, can, cone, box, ring) is the fine-tuning target; "solids" (pyramid,
capsule, egg, puck) is a larger set of other classes in the same kind of pictures, the source of
a pretrained start. A class is its 3-D shape: every object takes a random surface pattern from the
same bank (solid, stripes, checks, dots, wood, marble, speckle) in random colours, so neither
colour nor texture tells classes apart. Scenes are a room (wall and a floor in perspective), a
lawn under the sky, or a table seen from above; objects shrink with distance (perspective and
scale variety, 10 px to most of the image), stand in one light with soft shadows, hide each other
and are cut by out-of-focus foreground things and the border; look-alike clutter (cards, pens or
sticks, leaves) shares the scene. The camera adds white balance, gamma, vignetting, a lighting
gradient, defocus and motion blur, noise and JPEG quality 30-90; 8% of images are grey.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from . import solids
from .common import (Layer, World, camera, composite, downsample, fractal_noise, noise_sampler, polygon_coverage,
                     texture, to_image)

SS = 3                  # supersampling of the solids
P_GRAY = 0.08
P_EMPTY = 0.06
MIN_PX = 10             # smallest object size drawn

Solid = tuple[Callable[[np.ndarray, np.ndarray, float], solids.Surface], float, float]  # surface(x, y, e), radius, height


# ----------------------------------------------------------------------------- the classes
def _random_rot(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def _ball(rng) -> Solid:
    rot = _random_rot(rng)
    return (lambda x, y, e: solids.sphere(x, y, e, rot)), 1.0, 2.0


def _can(rng) -> Solid:
    height, phase = rng.uniform(1.2, 2.6), rng.uniform(0, 2 * np.pi)
    return (lambda x, y, e: solids.cylinder(x, y, e, height, phase)), 1.0, height


def _cone(rng) -> Solid:
    height, phase = rng.uniform(1.4, 2.8), rng.uniform(0, 2 * np.pi)
    return (lambda x, y, e: solids.cone(x, y, e, height, phase)), 1.0, height


def _box(rng) -> Solid:
    size, yaw = (rng.uniform(1.0, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0.8, 2.0)), rng.uniform(0, np.pi)
    return (lambda x, y, e: solids.cuboid(x, y, e, size, yaw)), math.hypot(size[0], size[2]) / 2, size[1]


def _ring(rng) -> Solid:
    tube, phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    return (lambda x, y, e: solids.torus(x, y, e, tube, phase)), 1.0, 2 * tube


def _pyramid(rng) -> Solid:
    height, yaw = rng.uniform(1.0, 2.2), rng.uniform(0, np.pi)
    return (lambda x, y, e: solids.pyramid(x, y, e, height, yaw)), math.sqrt(2), height


def _capsule(rng) -> Solid:
    length, radius, yaw = rng.uniform(1.2, 2.6), rng.uniform(0.35, 0.6), rng.uniform(0, np.pi)
    return (lambda x, y, e: solids.capsule(x, y, e, length, radius, yaw)), length / 2 + radius, 2 * radius


def _egg(rng) -> Solid:
    squash, rot = (rng.uniform(0.6, 0.78), 1.0), _random_rot(rng)
    tilt = rng.uniform(-0.5, 0.5) + (np.pi / 2 if rng.random() < 0.4 else 0.0)
    return (lambda x, y, e: solids.sphere(x, y, e, rot, squash, tilt)), 1.0, 2.0


def _puck(rng) -> Solid:
    height, phase = rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
    return (lambda x, y, e: solids.cylinder(x, y, e, height, phase)), 1.0, height


def _pen(rng) -> Solid:
    length, yaw = rng.uniform(2.5, 4.0), rng.uniform(0, np.pi)
    radius = rng.uniform(0.06, 0.12)
    return (lambda x, y, e: solids.capsule(x, y, e, length, radius, yaw)), length / 2 + radius, 2 * radius


def _stick(rng) -> Solid:
    size, yaw = (rng.uniform(2.5, 4.0), rng.uniform(0.08, 0.2), rng.uniform(0.08, 0.2)), rng.uniform(0, np.pi)
    return (lambda x, y, e: solids.cuboid(x, y, e, size, yaw)), size[0] / 2, size[1]


def _card(rng) -> Solid:
    size, yaw = (rng.uniform(1.2, 2.2), rng.uniform(0.01, 0.04), rng.uniform(0.8, 1.6)), rng.uniform(0, np.pi)
    return (lambda x, y, e: solids.cuboid(x, y, e, size, yaw)), math.hypot(size[0], size[2]) / 2, size[1]


# ----------------------------------------------------------------------------- drawing a solid
def _shade(surf: solids.Surface, tex: tuple, light: np.ndarray, ambient: float, shine: float) -> np.ndarray:
    """Lambert + Blinn-Phong colour [..., 3] of the covered points (textures by part)."""
    ndl = np.clip(surf.normal @ light, 0, 1)
    half = light + [0.0, 0.0, 1.0]
    half = half / np.linalg.norm(half)
    spec = np.clip(surf.normal @ half, 0, 1) ** 24 * shine * 255
    body = tex[0](surf.u, surf.v)
    cap = tex[1](surf.u, surf.v)
    base = np.where((surf.part == 1)[..., None], cap, body)
    return base * (ambient + (1 - ambient) * ndl)[..., None] + spec[..., None]


def _solid_layer(name: str | None, solid: Solid, size_px: float, bx: float, by: float, e: float, tex: tuple,
                 light: np.ndarray, rng) -> tuple[Layer, float]:
    """The solid drawn with its bottom centre at image point (bx, by), `size_px` across its larger
    projected extent; also its scale in pixels per unit."""
    surface, radius, height = solid
    up = height * math.cos(e) + radius * math.sin(e) + 0.1
    down = radius * math.sin(e) + 0.1
    scale = size_px / max(2 * radius, up + down)
    x0, y0 = math.floor(bx - (radius + 0.1) * scale), math.floor(by - up * scale)
    w, h = math.ceil(bx + (radius + 0.1) * scale) - x0 + 1, math.ceil(by + down * scale) - y0 + 1
    gx = (x0 + (np.arange(w * SS) + 0.5) / SS - bx) / scale
    gy = (y0 + (np.arange(h * SS) + 0.5) / SS - by) / scale
    X, Y = np.meshgrid(gx, gy)
    surf = surface(X, Y, e)
    rgb = _shade(surf, tex, light, rng.uniform(0.25, 0.45), rng.uniform(0.0, 0.6)) * surf.mask[..., None]
    alpha = downsample(surf.mask.astype(np.float32), SS)
    rgb = downsample(rgb.astype(np.float32), SS) / np.maximum(alpha, 1e-6)[..., None]
    return Layer(name, x0, y0, rgb.astype(np.float32), alpha.astype(np.float32), depth=by), scale


# ----------------------------------------------------------------------------- scenes
def _muted(rng):
    """A pattern for floors and walls: the object bank with its colours pulled toward grey."""
    pattern, pull = texture(rng), rng.uniform(0.4, 0.8)
    grey = rng.uniform(90, 190)
    return lambda u, v: pattern(u, v) * (1 - pull) + grey * pull


def _scene(rng, h: int, w: int) -> tuple[np.ndarray, float | None, float]:
    """Background image, horizon row (None: a table seen from above) and camera elevation."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.choice(["room", "lawn", "table"], p=[0.45, 0.3, 0.25])
    if kind == "table":
        sc = rng.uniform(2, 6) / max(h, w)
        img = _muted(rng)(xx * sc, yy * sc)
        return img.astype(np.float32), None, rng.uniform(math.radians(50), math.radians(80))
    horizon = rng.uniform(0.05, 0.45) * h
    focal = h * rng.uniform(0.8, 1.6)
    dy = np.maximum(yy - horizon, 0.5)
    z = focal / dy
    ground_x = (xx - w / 2) * z / focal
    sc = rng.uniform(0.05, 0.25) * focal / h * 4
    if kind == "room":
        floor = _muted(rng)(ground_x * sc, z * sc)
        wall = (np.full(3, rng.uniform(120, 230)) * rng.uniform(0.85, 1.0, 3)
                + 10 * fractal_noise(rng, h, w, 40)[..., None])
        if rng.random() < 0.4:
            stripes = np.sin(xx / rng.uniform(6, 30) * 2 * np.pi) > 0
            wall = wall * (1 - 0.08 * stripes[..., None])
    else:
        grass = np.array([rng.uniform(50, 110), rng.uniform(90, 150), rng.uniform(30, 80)])
        detail = noise_sampler(rng)
        d = sum(detail(ground_x * sc * f, z * sc * f) / f ** 0.5 for f in (0.5, 1.3, 3.1))
        floor = grass + 25 * d[..., None]
        sky = np.array([rng.uniform(120, 180), rng.uniform(160, 210), rng.uniform(210, 250)])
        wall = sky + (yy / max(horizon, 1))[..., None] * (250 - sky) * 0.6
        trees = horizon - (10 + 25 * (0.5 + fractal_noise(rng, 1, w, 30)[0])) * h / 400
        band = yy > trees[None, :]
        wall = np.where(band[..., None], np.array([40, 70, 35]) + 20 * fractal_noise(rng, h, w, 6)[..., None], wall)
    # Far floor texture is finer than a pixel: fade it to its mean as a lens would.
    fade = np.clip((yy - horizon) / (0.15 * h), 0, 1)[..., None]
    floor = floor * fade + floor.reshape(-1, 3).mean(0) * (1 - fade)
    img = np.where((yy > horizon)[..., None], floor, wall)
    return img.astype(np.float32), float(horizon), rng.uniform(math.radians(12), math.radians(40))


def _light(rng, e: float) -> tuple[np.ndarray, np.ndarray]:
    """A light direction in view coordinates and its shadow offset on the ground per unit height."""
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(math.radians(25), math.radians(75))
    world = np.array([math.cos(el) * math.cos(az), math.sin(el), math.cos(el) * math.sin(az)])
    ground = -np.array([math.cos(az), 0.0, math.sin(az)]) / math.tan(el)
    return solids.view_normal(world, e), solids.project(ground, e)


# ----------------------------------------------------------------------------- occluders, flat clutter
def _leaf(rng, cx: float, cy: float, size: float) -> list[np.ndarray]:
    k = int(rng.integers(7, 13))
    a = np.sort(rng.uniform(0, 2 * np.pi, k))
    r = size / 2 * rng.uniform(0.45, 1.0, k)
    return [np.stack([cx + r * np.cos(a), cy + r * np.sin(a) * rng.uniform(0.4, 1.0)], 1)]


def _flat(rng, polys: list[np.ndarray], depth: float) -> Layer | None:
    """A flat textured shape (a leaf or a sticker) lying in the scene: never labelled."""
    x0, y0, cov = polygon_coverage(polys)
    if cov.size == 0:
        return None
    h, w = cov.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = texture(rng)(xx / max(w, 1), yy / max(h, 1))
    return Layer(None, x0, y0, rgb.astype(np.float32), cov, depth)


def _foreground(rng, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An out-of-focus thing near the lens entering from a border: its colour and blurred coverage."""
    side = int(rng.integers(4))
    size = rng.uniform(0.3, 0.7) * min(h, w)
    along = rng.uniform(0.1, 0.9)
    cx, cy = [(along * w, 0), (along * w, h), (0, along * h), (w, along * h)][side]
    mask = np.zeros((h, w), np.float32)
    poly = _leaf(rng, cx, cy, size)[0] if rng.random() < 0.6 else \
        np.array([(cx - size * 0.15, cy - size), (cx + size * 0.15, cy - size),
                  (cx + size * 0.15, cy + size), (cx - size * 0.15, cy + size)])
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), rng.uniform(2, 7))
    colour = np.full(3, rng.uniform(10, 70)) + rng.uniform(-10, 25, 3)
    return colour, mask


def _cast_shadow(layer: Layer, by: float, offset: np.ndarray, e: float, strength: float, size: float):
    """The silhouette flattened onto the ground at its base and moved away from the light."""
    h, w = layer.alpha.shape
    flat_h = max(1, round(h * max(math.sin(e), 0.3)))
    cov = cv2.resize(layer.alpha, (w, flat_h), interpolation=cv2.INTER_AREA)
    bottom = by + 0.1 * size * math.sin(e)
    return (layer.x0 + round(offset[0]), round(bottom - flat_h + offset[1]), cov, strength, 0.06 * size + 1)


# ----------------------------------------------------------------------------- one image
def _size_at(rng, by: float, horizon: float | None, h: int, w: int, near: float) -> float:
    if horizon is None:
        return math.exp(rng.uniform(math.log(0.07), math.log(0.4))) * min(h, w)
    return near * (by - horizon) / (h - horizon) * rng.uniform(0.75, 1.25)


def _renderer(classes: dict[str, Callable], clutter: tuple[Callable, ...], objects: tuple[int, int]):
    def render(rng: np.random.Generator):
        """One photo-like image, its objects (VOC boxes) and its JPEG quality."""
        aspect = [(4, 3), (3, 4), (16, 9), (1, 1), (3, 2)][int(rng.integers(5))]
        long_side = int(rng.integers(400, 721))
        w, h = (long_side, round(long_side * aspect[1] / aspect[0])) if aspect[0] >= aspect[1] else \
            (round(long_side * aspect[0] / aspect[1]), long_side)
        img, horizon, e = _scene(rng, h, w)
        light, shadow_dir = _light(rng, e)
        near = rng.uniform(0.3, 0.75) * min(h, w)
        names = list(classes)
        n = 0 if rng.random() < P_EMPTY else int(rng.integers(objects[0], objects[1] + 1))
        todo = [(names[int(rng.integers(len(names)))], None) for _ in range(n)]
        todo += [(None, clutter[int(rng.integers(len(clutter)))]) for _ in range(int(rng.integers(0, 5)))]
        layers, strength = [], rng.uniform(0.3, 0.6)
        for name, make in todo:
            top = 0.0 if horizon is None else horizon + 0.04 * h
            by = rng.uniform(top, h * 1.05)
            bx = rng.uniform(-0.05, 1.05) * w
            size = _size_at(rng, by, horizon, h, w, near)
            if size < MIN_PX:
                continue
            if name is None and rng.random() < 0.3:   # a leaf or sticker, flat on the ground
                layer = _flat(rng, _leaf(rng, bx, by - size / 2, size), by)
                if layer is not None:
                    layers.append(layer)
                continue
            solid = (classes[name] if name else make)(rng)
            layer, scale = _solid_layer(name, solid, size, bx, by, e, (texture(rng), texture(rng)), light, rng)
            layer.shadow = _cast_shadow(layer, by, shadow_dir * solid[2] * 0.5 * scale, e, strength, size)
            layers.append(layer)
        occluder = _foreground(rng, h, w) if rng.random() < 0.25 else None
        objects_out = composite(img, layers, min_visible=0.4,
                                occluder=None if occluder is None else occluder[1] >= 0.5)
        if occluder is not None:
            colour, mask = occluder
            img[...] = img * (1 - mask[..., None]) + colour * mask[..., None]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        ramp = ((xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)) / max(h, w)
        img *= (1 + rng.uniform(0.1, 0.6) * ramp + 0.12 * fractal_noise(rng, h, w, max(h, w) / 2, 2))[..., None]
        img *= rng.uniform(0.6, 1.25)                          # exposure
        gray = bool(rng.random() < P_GRAY)
        pixels = camera(rng, img, blur=(0.2, 1.6), noise=(2.0, 9.0), p_motion=0.1)
        return to_image(pixels, gray), objects_out, int(rng.integers(30, 91))
    return render


PHOTO = World("photo", ("ball", "can", "cone", "box", "ring"),
              _renderer({"ball": _ball, "can": _can, "cone": _cone, "box": _box, "ring": _ring},
                        (_pen, _card), (1, 7)),
              "photo-like: ball, can, cone, box, ring (shape is the class) on floors, lawns and tables")
SOLIDS = World("solids", ("pyramid", "capsule", "egg", "puck"),
               _renderer({"pyramid": _pyramid, "capsule": _capsule, "egg": _egg, "puck": _puck},
                         (_stick, _card), (1, 7)),
               "the photo world's pictures with other classes: pyramid, capsule, egg, puck (pretraining source)")
