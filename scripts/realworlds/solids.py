"""Shaded solids for the photo-like worlds, drawn in orthographic projection from a camera at
elevation `e` above the ground plane.

World axes: x right, y up, z toward the camera before the camera tilts; a solid stands on the
ground with its bottom centre at the origin. A world point (x, y, z) lands on the screen at
(x, -y cos e + z sin e) (screen y points down) and a world normal n at view normal
(n_x, -n_y cos e + n_z sin e, n_y sin e + n_z cos e) (view z toward the viewer). Each solid maps
screen coordinates [..] (in units of the solid's radius) to a Surface: which points it covers,
their view normals, texture coordinates and which texture (0 the body's, 1 a cap's) they take.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Surface:
    mask: np.ndarray      # [...] bool
    normal: np.ndarray    # [..., 3] unit view normals (z toward the viewer)
    u: np.ndarray         # [...] texture coordinates, about 0-1 per face or turn
    v: np.ndarray
    part: np.ndarray      # [...] int: 0 body texture, 1 cap texture


def view_normal(n: np.ndarray, e: float) -> np.ndarray:
    """World normals [..., 3] -> view normals [..., 3] for camera elevation e."""
    c, s = math.cos(e), math.sin(e)
    return np.stack([n[..., 0], -n[..., 1] * c + n[..., 2] * s, n[..., 1] * s + n[..., 2] * c], -1)


def project(p: np.ndarray, e: float) -> np.ndarray:
    """World points [..., 3] -> screen points [..., 2]."""
    return np.stack([p[..., 0], -p[..., 1] * math.cos(e) + p[..., 2] * math.sin(e)], -1)


def _empty(x: np.ndarray) -> Surface:
    z = np.zeros_like(x)
    return Surface(np.zeros(x.shape, bool), np.stack([z, z, z + 1], -1), z, z, np.zeros(x.shape, int))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _merge(*layers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]) -> Surface:
    """Later (mask, normal, u, v, part) layers are in front of earlier ones."""
    shape = layers[0][0].shape
    out = _empty(np.zeros(shape))
    for mask, normal, u, v, part in layers:
        out.mask |= mask
        out.normal[mask] = np.broadcast_to(normal, shape + (3,))[mask]
        out.u[mask], out.v[mask] = np.broadcast_to(u, shape)[mask], np.broadcast_to(v, shape)[mask]
        out.part[mask] = part
    return out


# ----------------------------------------------------------------------------- round solids
def sphere(x: np.ndarray, y: np.ndarray, e: float, rot: np.ndarray, squash=(1.0, 1.0), tilt: float = 0.0) -> Surface:
    """A ball of radius 1 resting on the ground (an ellipsoid with `squash` screen axes turned by
    `tilt`: an egg); rot [3, 3] turns its texture."""
    sx, sy = squash
    top = max(sx, sy)
    c, s = math.cos(tilt), math.sin(tilt)
    px, py = x, y + top * math.cos(e)
    qx, qy = (px * c + py * s) / sx, (-px * s + py * c) / sy
    r2 = qx ** 2 + qy ** 2
    mask = r2 < 1
    qz = np.sqrt(np.clip(1 - r2, 0, 1))
    nx, ny = qx / sx, qy / sy
    n = _unit(np.stack([nx * c - ny * s, nx * s + ny * c, qz / ((sx + sy) / 2)], -1))
    p = np.stack([qx, qy, qz], -1) @ rot.T
    u = np.arctan2(p[..., 1], p[..., 0]) / (2 * np.pi) * 2
    v = np.arccos(np.clip(p[..., 2], -1, 1)) / np.pi
    return _merge((mask, n, u, v, 0))


def cylinder(x: np.ndarray, y: np.ndarray, e: float, height: float, phase: float) -> Surface:
    """An upright can of radius 1 and `height`: its side (body texture) and its lid (cap texture)."""
    k, hc = math.sin(e), height * math.cos(e)
    d = np.sqrt(np.clip(1 - x ** 2, 0, 1))
    side = (np.abs(x) < 1) & (y <= k * d) & (y >= -hc)
    n_side = view_normal(np.stack([x, np.zeros_like(x), d], -1), e)
    u_side = (np.arcsin(np.clip(x, -1, 1)) + phase) / np.pi
    v_side = (y - k * d + hc) / max(hc, 1e-6) * height / np.pi
    lid = x ** 2 + ((y + hc) / max(k, 1e-6)) ** 2 < 1
    n_lid = view_normal(np.array([0.0, 1.0, 0.0]), e)
    return _merge((side, n_side, u_side, v_side, 0), (lid, n_lid, (x + 1) / 2, (y + hc) / max(k, 1e-6) / 2, 1))


def cone(x: np.ndarray, y: np.ndarray, e: float, height: float, phase: float) -> Surface:
    """An upright cone of base radius 1 and `height`.

    Its surface point at radius fraction r (0 apex, 1 rim) and angle a, (r cos a, height (1 - r),
    r sin a), lands on the screen at x = r cos a, y = -hc + r (hc + k sin a) with hc = height cos e
    and k = sin e; for a pixel that is a quadratic in r, and the nearer of its roots is seen."""
    k, hc = math.sin(e), height * math.cos(e)
    y0 = y + hc
    qa, qb, qc = k ** 2 - hc ** 2, 2 * y0 * hc, -(k ** 2 * x ** 2 + y0 ** 2)
    disc = np.sqrt(np.clip(qb ** 2 - 4 * qa * qc, 0, None))
    best = np.full(x.shape, -np.inf)
    r_seen, s_seen = np.zeros_like(x), np.zeros_like(x)
    roots = [(-qb + disc) / (2 * qa), (-qb - disc) / (2 * qa)] if abs(qa) > 1e-9 else [-qc / np.maximum(qb, 1e-9)]
    for r in roots:
        r = np.where(np.isfinite(r), r, -1.0)
        s = (y0 - r * hc) / (np.maximum(r, 1e-6) * k)
        ok = (r > 0) & (r <= 1) & (np.abs(s) <= 1 + 1e-6) & (qb ** 2 - 4 * qa * qc >= 0)
        depth = np.where(ok, height * (1 - r) * k + r * np.clip(s, -1, 1) * math.cos(e), -np.inf)
        nearer = depth > best
        best = np.where(nearer, depth, best)
        r_seen, s_seen = np.where(nearer, r, r_seen), np.where(nearer, np.clip(s, -1, 1), s_seen)
    mask = np.isfinite(best)
    c = np.clip(x / np.maximum(r_seen, 1e-6), -1, 1)
    lean = math.atan(1 / height)                            # the surface leans back by this much
    n = view_normal(np.stack([c * math.cos(lean), np.full_like(c, math.sin(lean)), s_seen * math.cos(lean)], -1), e)
    return _merge((mask, _unit(n), (np.arctan2(s_seen, c) + phase) / np.pi, r_seen * height / np.pi, 0))


def torus(x: np.ndarray, y: np.ndarray, e: float, tube: float, phase: float) -> Surface:
    """A ring of outer radius 1 and tube radius `tube` lying flat (its thickness drawn flat)."""
    k = max(math.sin(e), 1e-3)
    yc = y + tube * math.cos(e)
    q = np.sqrt(x ** 2 + (yc / k) ** 2)
    major = 1 - tube
    w = np.clip((q - major) / tube, -1, 1)
    mask = np.abs(q - major) < tube
    ca, sa = x / np.maximum(q, 1e-6), yc / k / np.maximum(q, 1e-6)
    up = np.sqrt(1 - w ** 2)
    n = view_normal(np.stack([w * ca, up, w * sa], -1), e)
    return _merge((mask, _unit(n), (np.arctan2(sa, ca) + phase) / (2 * np.pi) * 3, (w + 1) / 2, 0))


def capsule(x: np.ndarray, y: np.ndarray, e: float, length: float, radius: float, yaw: float) -> Surface:
    """A pill of `radius` and `length` (cap centre to cap centre) lying on the ground, turned by yaw.

    In orthographic projection its outline is the projected axis widened by the radius. A pixel
    shows the nearest of the side (a normal perpendicular to the axis whose screen part across
    the axis is the offset / radius) and the two hemispherical caps."""
    axis = np.array([math.cos(yaw), 0.0, math.sin(yaw)])
    centre = np.array([0.0, radius, 0.0])
    ends = [centre - axis * length / 2, centre + axis * length / 2]
    va = view_normal(axis, e)                                   # the axis in view coordinates
    depth = [float(p[1] * math.sin(e) + p[2] * math.cos(e)) for p in ends]
    a = project(ends[0], e)
    along_unit = va[:2] / np.linalg.norm(va[:2])
    across = np.array([-along_unit[1], along_unit[0], 0.0])
    b2 = np.cross(va, across)
    b2 = b2 if b2[2] >= 0 else -b2
    rel_x, rel_y = x - a[0], y - a[1]
    off = (rel_x * across[0] + rel_y * across[1]) / radius     # cos of the angle around the axis
    ok = np.abs(off) < 1
    sin_phi = np.sqrt(np.clip(1 - off ** 2, 0, 1))
    n_side = off[..., None] * across + sin_phi[..., None] * b2
    along = rel_x * along_unit[0] + rel_y * along_unit[1]
    s = (along - radius * (n_side[..., :2] @ along_unit)) / np.linalg.norm(va[:2])
    z_side = np.where(ok & (s >= 0) & (s <= length), depth[0] + s * va[2] + radius * n_side[..., 2], -np.inf)
    best, normal = z_side, n_side
    u = s / length
    for end, z_end in zip(ends, depth):
        ex, ey = project(end, e)
        dx, dy = (x - ex) / radius, (y - ey) / radius
        dz = np.sqrt(np.clip(1 - dx ** 2 - dy ** 2, 0, 1))
        z = np.where(dx ** 2 + dy ** 2 < 1, z_end + radius * dz, -np.inf)
        nearer = z > best
        best = np.where(nearer, z, best)
        normal = np.where(nearer[..., None], np.stack([dx, dy, dz], -1), normal)
    mask = np.isfinite(best)
    v = np.arctan2(off, sin_phi) / np.pi + 0.5
    return _merge((mask, _unit(normal), np.clip(u, 0, 1) * length / 2, v, 0))


# ----------------------------------------------------------------------------- flat-faced solids
def _faces(x: np.ndarray, y: np.ndarray, e: float, faces: list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]],
           centre: np.ndarray) -> Surface:
    """Planar faces (origin, edge a, edge b, triangle?) of a convex solid around `centre`, in world
    units; faces turned away are skipped and nearer faces drawn last."""
    layers = []
    for o, a, b, tri in faces:
        n = _unit(np.cross(a, b))
        if n @ (o + (a + b) / 3 - centre) < 0:  # outward
            n = -n
        n = view_normal(n, e)
        if n[2] <= 1e-6:
            continue
        O, A, B = project(o, e), project(a, e), project(b, e)
        det = A[0] * B[1] - A[1] * B[0]
        if abs(det) < 1e-9:
            continue
        px, py = x - O[0], y - O[1]
        s = (px * B[1] - py * B[0]) / det
        t = (A[0] * py - A[1] * px) / det
        inside = (s >= 0) & (t >= 0) & ((s + t <= 1) if tri else ((s <= 1) & (t <= 1)))
        centre = o + (a + b) / (3 if tri else 2)
        depth = centre[1] * math.sin(e) + centre[2] * math.cos(e)
        layers.append((depth, (inside, n, s * np.linalg.norm(a) / 2, t * np.linalg.norm(b) / 2, 0)))
    if not layers:
        return _empty(x)
    return _merge(*[layer for _, layer in sorted(layers, key=lambda item: item[0])])


def _yawed(yaw: float):
    c, s = math.cos(yaw), math.sin(yaw)
    return lambda p: np.array([p[0] * c - p[2] * s, p[1], p[0] * s + p[2] * c])


def cuboid(x: np.ndarray, y: np.ndarray, e: float, size: tuple[float, float, float], yaw: float) -> Surface:
    """A box of width, height, depth `size` on the ground, turned by yaw."""
    w, h, d = size
    r = _yawed(yaw)
    c = lambda px, py, pz: r(np.array([px, py, pz]))  # noqa: E731
    X, Y, Z = r(np.array([w, 0, 0])), r(np.array([0, h, 0])), r(np.array([0, 0, d]))
    o = c(-w / 2, 0, -d / 2)
    faces = [(o + Y, Z, X, False), (o, X, Y, False), (o + Z, Y, X, False),   # top, back, front
             (o, Y, Z, False), (o + X, Z, Y, False)]                          # left, right
    return _faces(x, y, e, faces, np.array([0.0, h / 2, 0.0]))


def pyramid(x: np.ndarray, y: np.ndarray, e: float, height: float, yaw: float) -> Surface:
    """A square pyramid of base side 2 and `height`, turned by yaw."""
    r = _yawed(yaw)
    apex = np.array([0.0, height, 0.0])
    corners = [r(np.array(p, float)) for p in ((-1, 0, -1), (1, 0, -1), (1, 0, 1), (-1, 0, 1))]
    faces = [(c0, c1 - c0, apex - c0, True) for c0, c1 in zip(corners, corners[1:] + corners[:1])]
    return _faces(x, y, e, faces, np.array([0.0, height / 3, 0.0]))
