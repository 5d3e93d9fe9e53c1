"""Analytic ray-primitive intersections for the procedural scenes.

Rays are ``origins [R,3]`` and ``dirs [R,3]``; directions are *not* normalised: the renderer gives every pixel ray a
camera-space z component of 1, so the returned ray parameter ``t`` is the pixel's z-depth. Each primitive returns
``t`` (``inf`` where missed) and can evaluate its outward-facing normal at surface points, which keeps the
per-primitive work to one vectorised pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of ``[R,3]`` arrays (column arithmetic: much faster than a reduction over axis 1)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _first_positive(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Smallest root in front of the origin (``inf`` if none), given ``t0 <= t1``."""
    t = np.where(t0 > EPS, t0, t1)
    return np.where(t > EPS, t, np.inf)


@dataclass
class Primitive:
    """Base class: a surface with a material index into the scene's material list."""

    material: int

    def __post_init__(self) -> None:
        # Rays are float32 (half the memory traffic of float64); keep parameters float32 too so numpy does not
        # silently promote every ray array back to float64.
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                setattr(self, name, value.astype(np.float32))
            elif isinstance(value, float):
                setattr(self, name, np.float32(value))

    def intersect(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def bounding_sphere(self) -> tuple[np.ndarray, float] | None:
        """Centre and radius enclosing the primitive (``None`` if unbounded): lets the caster skip most rays."""
        return None

    def normal(self, points: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass
class Sphere(Primitive):
    center: np.ndarray
    radius: float
    inside: bool = False  # seen from inside (a sky dome): take the far root, normals point inwards

    def intersect(self, origins, dirs):
        oc = origins - self.center
        a = rowdot(dirs, dirs)
        b = rowdot(oc, dirs)
        c = rowdot(oc, oc) - self.radius**2
        disc = b * b - a * c
        hit = disc >= 0
        sq = np.sqrt(np.where(hit, disc, 0.0))
        t0, t1 = (-b - sq) / a, (-b + sq) / a
        t = np.where(t1 > EPS, t1, np.inf) if self.inside else _first_positive(t0, t1)
        return np.where(hit, t, np.inf)

    def bounding_sphere(self):
        return None if self.inside else (self.center, float(self.radius))

    def normal(self, points):
        n = (points - self.center) / self.radius
        return -n if self.inside else n


@dataclass
class Plane(Primitive):
    """Infinite one-sided plane; only hit from the side its normal faces (room walls, ground)."""

    point: np.ndarray
    unit_normal: np.ndarray

    def intersect(self, origins, dirs):
        denom = dirs @ self.unit_normal
        facing = denom < -EPS
        t = (self.point @ self.unit_normal - origins @ self.unit_normal) / np.where(facing, denom, -1.0)
        return np.where(facing & (t > EPS), t, np.inf)

    def normal(self, points):
        return np.broadcast_to(self.unit_normal, points.shape).copy()


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Box(Primitive):
    """Box rotated about the vertical (z) axis by ``yaw``; slab test in its local frame."""

    center: np.ndarray
    half_extents: np.ndarray
    yaw: float = 0.0

    def bounding_sphere(self):
        return self.center, float(np.linalg.norm(self.half_extents))

    def _to_local(self, v: np.ndarray) -> np.ndarray:
        return v @ _yaw_matrix(self.yaw)  # row vectors: v @ R == (R^T v^T)^T

    def intersect(self, origins, dirs):
        o = self._to_local(origins - self.center)
        d = self._to_local(dirs)
        inv = 1.0 / np.where(np.abs(d) < 1e-12, np.float32(1e-12), d)
        ta = (-self.half_extents - o) * inv
        tb = (self.half_extents - o) * inv
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        t_near = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])
        t_far = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
        hit = (t_near <= t_far) & (t_far > EPS)
        return np.where(hit, _first_positive(t_near, t_far), np.inf)

    def normal(self, points):
        local = self._to_local(points - self.center) / self.half_extents
        axis = np.abs(local).argmax(axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(len(local)), axis] = np.sign(local[np.arange(len(local)), axis])
        return n_local @ _yaw_matrix(self.yaw).T


@dataclass
class Cylinder(Primitive):
    """Vertical capped cylinder standing on ``z0`` up to ``z1``."""

    center_xy: np.ndarray
    radius: float
    z0: float
    z1: float

    def intersect(self, origins, dirs):
        ox, oy = origins[:, 0] - self.center_xy[0], origins[:, 1] - self.center_xy[1]
        dx, dy = dirs[:, 0], dirs[:, 1]
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        c = ox * ox + oy * oy - self.radius**2
        disc = b * b - a * c
        ok = (disc >= 0) & (a > 1e-12)
        sq = np.sqrt(np.where(ok, disc, 0.0))
        a_safe = np.where(a > 1e-12, a, 1.0)
        best = np.full(len(origins), np.inf)
        for t in ((-b - sq) / a_safe, (-b + sq) / a_safe):
            z = origins[:, 2] + t * dirs[:, 2]
            valid = ok & (t > EPS) & (z >= self.z0) & (z <= self.z1)
            best = np.where(valid & (t < best), t, best)
        dz = np.where(np.abs(dirs[:, 2]) < 1e-12, 1e-12, dirs[:, 2])
        for zc in (self.z0, self.z1):
            t = (zc - origins[:, 2]) / dz
            px, py = ox + t * dx, oy + t * dy
            valid = (t > EPS) & (px * px + py * py <= self.radius**2)
            best = np.where(valid & (t < best), t, best)
        return best

    def bounding_sphere(self):
        center = np.array([self.center_xy[0], self.center_xy[1], (self.z0 + self.z1) / 2], dtype=np.float32)
        return center, float(np.hypot(self.radius, (self.z1 - self.z0) / 2))

    def normal(self, points):
        rel = points[:, :2] - self.center_xy
        n = np.zeros_like(points)
        on_cap_top = np.abs(points[:, 2] - self.z1) < 1e-4
        on_cap_bottom = np.abs(points[:, 2] - self.z0) < 1e-4
        side = ~(on_cap_top | on_cap_bottom)
        n[side, :2] = rel[side] / np.maximum(np.linalg.norm(rel[side], axis=1, keepdims=True), 1e-12)
        n[on_cap_top, 2] = 1.0
        n[on_cap_bottom, 2] = -1.0
        return n
